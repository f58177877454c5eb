"""Writes `schemas/terms.schema.json`, the JSON Schema of a terms file, from the protobuf
descriptor of `accord.agreements.v1.AgreementTerms` and the objective parameters the
agreements service declares (`accord_cli.terms_schema` builds it).

    .venv/bin/python tools/make_terms_schema.py           # write it
    .venv/bin/python tools/make_terms_schema.py --check   # exit 1 if the committed file differs
"""

import json
import pathlib
import sys

from accord_cli.terms_schema import build

TARGET = pathlib.Path(__file__).resolve().parent.parent / "schemas" / "terms.schema.json"


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["--check"]:
        if not TARGET.exists() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET} is out of date: run tools/make_terms_schema.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
