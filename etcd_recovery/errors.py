"""One error tree for the whole tool, and the exit codes it maps to.

Exit codes (documented in README):
    0  done (and verified, where the command verifies)
    1  a step or an operation failed; state is left safe and described
    2  usage or inventory error
    3  refused by a safety check
    4  shown, not run: a dry run (execute or rejoin without --confirm); add --confirm

Backends' exceptions (paramiko, grpc, docker, OSError) are translated at the edge with
``raise SomeError(...) from exc`` so callers only ever see these types.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_DRY_RUN = 4


class EtcdRecoveryError(Exception):
    """Root of every error the tool raises on purpose."""

    exit_code: int = EXIT_FAILED


class UsageError(EtcdRecoveryError):
    """Bad command-line use."""

    exit_code = EXIT_USAGE


class InventoryError(UsageError):
    """The inventory file is missing, unreadable or has a wrong field.

    The message names the file, the member (when there is one) and the field.
    """

    def __init__(self, path: str, message: str, member: str | None = None,
                 field: str | None = None) -> None:
        self.path = path
        self.member = member
        self.field = field
        where = path
        if member is not None:
            where += f": member {member!r}"
        if field is not None:
            where += f": field {field!r}"
        super().__init__(f"{where}: {message}")


class TransportError(EtcdRecoveryError):
    """Talking to a host failed (SSH, SFTP, tunnel)."""

    def __init__(self, host: str, message: str) -> None:
        self.host = host
        self.detail = message  # the message without the host's label in front
        super().__init__(f"{host}: {message}")


class HostUnreachable(TransportError):
    """The host did not answer (refused, timed out, no route, auth failed)."""


class AccessDenied(HostUnreachable):
    """The host answered but would not let us in (authentication, identity file): not a host
    that is gone, but an inventory or credentials mistake."""


class JumpHostError(HostUnreachable):
    """The jump host (ProxyJump) did not let us through: says nothing about the member."""


class HostKeyError(TransportError):
    """The host's SSH key is unknown or has changed: never trusted silently."""


class RemoteCommandError(TransportError):
    """A command on a host exited non-zero."""

    def __init__(self, host: str, command: str, exit_status: int, stderr: str) -> None:
        self.command = command
        self.exit_status = exit_status
        self.stderr = stderr
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else "no error output"
        super().__init__(host, f"command {command!r} exited {exit_status}: {detail}")


class FormatError(EtcdRecoveryError):
    """A file on disk (WAL, snap, bbolt, plan, journal) is not what it should be.

    Always names the file and the byte offset where reading went wrong.
    """

    def __init__(self, file: str, offset: int, message: str) -> None:
        self.file = file
        self.offset = offset
        super().__init__(f"{file} at offset {offset}: {message}")


class EtcdApiError(EtcdRecoveryError):
    """An etcd gRPC call failed."""

    def __init__(self, endpoint: str, method: str, message: str) -> None:
        self.endpoint = endpoint
        self.method = method
        super().__init__(f"{endpoint}: {method}: {message}")


class RefusedError(EtcdRecoveryError):
    """A safety check refused to go on; nothing was changed by the refusal."""

    exit_code = EXIT_REFUSED


class PreconditionError(RefusedError):
    """A step's precondition no longer holds; the executor stops before acting."""


class LabError(EtcdRecoveryError):
    """The lab could not be built, started or changed."""


class StepFailed(EtcdRecoveryError):
    """A step's action or check failed; the journal says where, the state is left as is."""
