"""Pure readers for etcd's on-disk formats: WAL, snap files and the bbolt backend.

Readers take a :class:`~etcd_recovery.formats.source.ByteSource` (random-access reads) and
return plain values. They never open paths or talk to hosts themselves, so the same code reads
a local file in tests and a remote file over SFTP without copying it whole.
"""
