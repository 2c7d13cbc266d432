"""`python -m wanfit device [--json]`"""

import argparse
import json

from ..device import probe_device


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m wanfit device", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the probe as JSON")
    args = parser.parse_args(argv)
    info = probe_device()
    print(json.dumps(info.as_dict(), indent=2) if args.json else info.summary())
    return 0
