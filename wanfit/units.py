"""One place for byte/GB conversions so units never mix."""

BYTES_PER_MIB = 1024**2
BYTES_PER_GIB = 1024**3


def gib(num_bytes):
    return num_bytes / BYTES_PER_GIB


def gib_to_bytes(gigabytes):
    return int(round(gigabytes * BYTES_PER_GIB))


def format_gib(num_bytes):
    return f"{gib(num_bytes):.1f} GB"
