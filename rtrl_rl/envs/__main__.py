"""``python -m rtrl_rl.envs --list [FAMILY ...]``: every id with its spaces and options."""

from __future__ import annotations

import argparse
import traceback

from rtrl_rl import cli
from rtrl_rl.envs import FAMILIES, MissingDependencyError, describe, get_spec, list_ids


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(prog="python -m rtrl_rl.envs", description=__doc__)
  ap.add_argument("--list", action="store_true", help="print every id with its spaces")
  ap.add_argument("--options", action="store_true", help="also print each family's options")
  ap.add_argument(
    "--verbose",
    action="store_true",
    help="also print the traceback of an id whose spaces cannot be described",
  )
  ap.add_argument(
    "families", nargs="*", default=[], metavar="FAMILY", help=f"restrict to these families {sorted(FAMILIES)}"
  )
  args = ap.parse_args(argv)
  unknown = [f for f in args.families if f not in FAMILIES]
  if unknown:
    ap.error(f"unknown family {', '.join(map(repr, unknown))}: choose from {', '.join(sorted(FAMILIES))}")
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
        line = f"(error: {cli.describe(e)})"
        if args.verbose:
          traceback.print_exc()
      print(f"{env_id:48s} {line}")
    if args.options:
      for o in get_spec(ids[0]).options:
        print(f"    option {o.name}={o.default!r}: {o.doc}")
  return 0


if __name__ == "__main__":
  cli.run(main)
