"""etcdflags' reading of a running etcd, written out in bash for the runbook.

The runbook is pasted by a person, without this tool: it cannot call :mod:`.etcdflags`. So
the same rules (Go's flag package, then ``ETCD_*`` for flags not given, ``--config-file``
deciding alone; the member's own etcd among several on a host by its data dir) are rendered
here as bash functions, from etcdflags' own tables (its boolean flags and Go's boolean words),
and tests/unit/test_etcdflags_sh.py runs them in bash against etcdflags on generated command
lines and environments: the runbook's "runs without --force-new-cluster" is etcdflags'
answer, not a grep (which took ``--force-new-cluster=false`` for the flag, and the host's
first etcd for the member's).

``etcd_of DATA_DIR`` reads a host's process dump (processes.DUMP's format: pid, then cmdline
and environ in base64, one per line) on stdin and prints the member's own etcd as ``PID
FORCE``, FORCE being ``true``, ``false`` or ``unknown``; nothing when the member's etcd does not
run. The runbook's ``etcd_stopped``, ``etcd_running`` and ``runs_without_force`` are built on it.
"""

from __future__ import annotations

from .etcdflags import _FALSE, _TRUE, BOOL_FLAGS
from .processes import DUMP


def _words(values: frozenset[str]) -> str:
    return "|".join(sorted(values))


FUNCTIONS = r"""etcd_flags() {  # etcd_flags CMDLINE_B64 ENVIRON_B64: the data dir, a tab, FORCE
  local -a a e; local -A f=(); local s n v kv k bad=
  mapfile -d '' -t a < <(printf %s "$1" | base64 -d 2>/dev/null)
  mapfile -d '' -t e < <(printf %s "$2" | base64 -d 2>/dev/null)
  a=("${a[@]:1}")
  while ((${#a[@]})); do
    s=${a[0]}
    if [ "${#s}" -lt 2 ] || [ "${s:0:1}" != - ]; then break; fi
    if [ "$s" = -- ]; then a=("${a[@]:1}"); break; fi
    if [ "${s:1:1}" = - ]; then n=${s:2}; else n=${s:1}; fi
    case $n in ''|-*|=*) bad=1; break ;; esac
    a=("${a[@]:1}")
    if [[ $n == *=* ]]; then v=${n#*=}; n=${n%%=*}
    elif case $n in @BOOLS@) true ;; *) false ;; esac; then v=true
    elif ((${#a[@]})); then v=${a[0]}; a=("${a[@]:1}")
    else bad=1; break; fi
    case $n in data-dir|force-new-cluster|config-file) f[$n]=$v ;; esac
  done
  ((${#a[@]})) && bad=1
  for kv in "${e[@]}"; do
    k=${kv%%=*}; v=${kv#*=}
    [[ $kv == *=* && -n $k ]] || continue
    [[ $k == ETCD_* && $k != ETCD_UNSUPPORTED_ARCH ]] || continue
    n=${k:5}; n=${n,,}; n=${n//_/-}
    case $n in
      data-dir|force-new-cluster|config-file) [[ -v f[$n] ]] || f[$n]=$v ;;
    esac
  done
  local dd=${f[data-dir]-} force
  if [ -n "$dd" ]; then dd=$(norm_path "$dd"); fi
  if [ -n "$bad" ] || [ -n "${f[config-file]-}" ]; then force=unknown
  elif [[ ! -v f[force-new-cluster] ]]; then force=false
  else
    case ${f[force-new-cluster]} in
      @TRUE@) force=true ;;
      @FALSE@) force=false ;;
      *) force=unknown ;;
    esac
  fi
  printf '%s\t%s\n' "$dd" "$force"
}
norm_path() {  # norm_path PATH: as Python's posixpath.normpath
  local p=$1 lead= part rest; local -a out=()
  [ -n "$p" ] || { echo .; return; }
  if [[ $p == /* ]]; then lead=/; if [[ $p == //* && $p != ///* ]]; then lead=//; fi; fi
  rest=$p/
  while [ -n "$rest" ]; do
    part=${rest%%/*}; rest=${rest#*/}
    case $part in
      ''|.) ;;
      ..) if ((${#out[@]})) && [ "${out[-1]}" != .. ]; then unset 'out[-1]'
          elif [ -z "$lead" ]; then out+=(..); fi ;;
      *) out+=("$part") ;;
    esac
  done
  local IFS=/; p="$lead${out[*]}"; printf '%s\n' "${p:-.}"
}
etcd_of() {  # etcd_of DATA_DIR < DUMP: "PID FORCE" of the member's own etcd, if it runs
  local want pid cmd env line dd force mine= lone= n=0
  want=$(norm_path "$1")
  while IFS= read -r pid && IFS= read -r cmd && IFS= read -r env; do
    [[ $pid =~ ^[0-9]+$ ]] || continue
    n=$((n + 1))
    line=$(etcd_flags "$cmd" "$env"); dd=${line%%$'\t'*}; force=${line#*$'\t'}
    if [ "$dd" = "$want" ]; then
      if [ -z "$mine" ] || [ "$pid" -lt "${mine%% *}" ]; then mine="$pid $force"; fi
    elif [ -z "$dd" ]; then lone="$pid $force"
    fi
  done
  if [ -n "$mine" ]; then echo "$mine"; elif [ "$n" -eq 1 ] && [ -n "$lone" ]; then echo "$lone"; fi
}
ETCD_DUMP='set -- $(pgrep -x etcd); @DUMP@'
etcd_dump() {  # etcd_dump HOST: every etcd process on HOST, its cmdline and environ
  on "$1" sh -c "'$ETCD_DUMP'"
}
own_etcd() { etcd_dump "$1" | etcd_of "$(data_dir_of "$1")"; }
etcd_stopped() { [ -z "$(own_etcd "$1")" ]; }
etcd_running() { [ -n "$(own_etcd "$1")" ]; }
runs_without_force() { [ "$(own_etcd "$1" | cut -d' ' -f2)" = false ]; }""" \
    .replace("@BOOLS@", "|".join(sorted(BOOL_FLAGS))) \
    .replace("@TRUE@", _words(_TRUE)).replace("@FALSE@", _words(_FALSE)) \
    .replace("@DUMP@", DUMP)

if "'" in DUMP:  # ETCD_DUMP holds it inside single quotes
    raise AssertionError("processes.DUMP must not hold a single quote")
