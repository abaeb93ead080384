"""Rewrite a wheel without some of its files (to fit the device tool's 64 MiB carry limit).

    python bench/gpu/slim_wheel.py IN.whl OUT_DIR --drop 'envpool/*/*.so' --keep 'envpool/atari/*' ...

Writes OUT_DIR/<same file name> holding every member of IN.whl except those matching a --drop glob
and no --keep glob (fnmatch on the member path), each module named by --tolerant-imports rewritten
so that its top-level `import x.y` lines skip what is missing (each becomes `try: import x.y` /
`except ImportError: pass`, e.g. envpool/entry.py, which imports every family's engine), with a
regenerated RECORD (sha256 + size of each kept file), so pip
installs it like the original. Prints the sizes before and after. Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import os
import re
import sys
import zipfile


def _record_hash(data: bytes) -> str:
  digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
  return f"sha256={digest}"


_IMPORT = re.compile(r"^import ([\w.]+)(\s+#.*)?$")


def tolerant_imports(source: str) -> str:
  """`import a.b` lines (top level) -> `try: import a.b` / `except ImportError: pass`."""
  out = []
  for line in source.splitlines():
    m = _IMPORT.match(line)
    if m:
      out += [
        "try:",
        f"  import {m.group(1)}{m.group(2) or ''}",
        "except ImportError:  # left out of this slimmed wheel (bench/gpu/slim_wheel.py)",
        "  pass",
      ]
    else:
      out.append(line)
  return "\n".join(out) + "\n"


def slim(src: str, out_dir: str, drop: list[str], keep: list[str] = (), tolerant: list[str] = ()) -> str:
  os.makedirs(out_dir, exist_ok=True)
  dst = os.path.join(out_dir, os.path.basename(src))
  if os.path.abspath(dst) == os.path.abspath(src):
    raise SystemExit("OUT_DIR must differ from the input wheel's folder")
  with zipfile.ZipFile(src) as zin:
    names = zin.namelist()
    record = [n for n in names if n.endswith(".dist-info/RECORD")]
    if len(record) != 1:
      raise SystemExit(f"{src}: expected one .dist-info/RECORD, found {record}")
    record = record[0]

    def wanted(n):
      return any(fnmatch.fnmatch(n, p) for p in keep) or not any(fnmatch.fnmatch(n, p) for p in drop)

    kept = [n for n in names if n != record and wanted(n)]
    missing = [t for t in tolerant if t not in kept]
    if missing:
      raise SystemExit(f"{src}: --tolerant-imports members not in the wheel: {missing}")
    dropped = len(names) - 1 - len(kept)
    lines = []
    with zipfile.ZipFile(dst + ".tmp", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
      for n in kept:
        info = zin.getinfo(n)
        data = zin.read(n)
        if n in tolerant:
          data = tolerant_imports(data.decode()).encode()
        zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
        if not n.endswith("/"):
          lines.append(f"{n},{_record_hash(data)},{len(data)}")
      lines.append(f"{record},,")
      zout.writestr(zin.getinfo(record), "\n".join(lines) + "\n")
  os.replace(dst + ".tmp", dst)
  print(
    f"slimmed {os.path.basename(src)}: {os.path.getsize(src) / 2**20:.1f} MiB -> "
    f"{os.path.getsize(dst) / 2**20:.1f} MiB ({dropped} of {len(names)} members dropped)"
  )
  return dst


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("wheel")
  p.add_argument("out_dir")
  p.add_argument("--drop", action="append", default=[], help="fnmatch glob of members to leave out")
  p.add_argument("--keep", action="append", default=[], help="fnmatch glob of members kept anyway")
  p.add_argument(
    "--tolerant-imports",
    action="append",
    default=[],
    metavar="MEMBER",
    help="a .py member whose top-level `import x` lines may fail (see above)",
  )
  args = p.parse_args(argv)
  slim(args.wheel, args.out_dir, args.drop, args.keep, args.tolerant_imports)
  return 0


if __name__ == "__main__":
  sys.exit(main())
