"""Puts the kit, the services and the generated code on the virtualenv's path.

Run by the Makefile: `write_pth.py` writes `accord.pth` into site-packages;
`write_pth.py --init DIR` adds the `__init__.py` files protoc does not write.
"""

import pathlib
import site
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PATHS = [
    "kit",
    "cli",
    "services/agreements",
    "services/metrics",
    "services/billing",
    "services/gateway",
    "services/notifier",
    "gen",
    ".",
]


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "--init":
        for d in pathlib.Path(argv[1]).rglob("*"):
            if d.is_dir() and not (d / "__init__.py").exists():
                (d / "__init__.py").touch()
        return
    target = pathlib.Path(site.getsitepackages()[0]) / "accord.pth"
    target.write_text("".join(f"{ROOT / p}\n" for p in PATHS))
    # The `accord` command line, beside this Python.
    script = pathlib.Path(sys.executable).parent / "accord"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom accord_cli.__main__ import main\nsys.exit(main())\n")
    script.chmod(0o755)


if __name__ == "__main__":
    main(sys.argv[1:])
