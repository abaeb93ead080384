"""``python -m rtrl_rl.envs --list [FAMILY ...]``: every id with its spaces and options."""
from __future__ import annotations

import argparse
import sys

from rtrl_rl.envs import FAMILIES, MissingDependencyError, describe, get_spec, list_ids


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rtrl_rl.envs", description=__doc__)
    ap.add_argument("--list", action="store_true", help="print every id with its spaces")
    ap.add_argument("--options", action="store_true", help="also print each family's options")
    ap.add_argument("families", nargs="*", choices=[[]] + sorted(FAMILIES), default=[],
                    metavar="FAMILY", help=f"restrict to these families {sorted(FAMILIES)}")
    args = ap.parse_args(argv)
    if not args.list:
        ap.print_help()
        return 0
    fams = args.families or list(FAMILIES)
    for fam in fams:
        ids = list_ids(fam)
        print(f"## {fam} ({len(ids)} ids)")
        for env_id in ids:
            try:
                obs, act = describe(env_id)
                line = f"obs={obs}  act={act}"
            except MissingDependencyError as e:
                line = f"(unavailable: {str(e).splitlines()[0]})"
            except Exception as e:  # noqa: BLE001 - keep listing the other ids
                line = f"(error: {type(e).__name__}: {e})"
            print(f"{env_id:48s} {line}")
        if args.options:
            for o in get_spec(ids[0]).options:
                print(f"    option {o.name}={o.default!r}: {o.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
