"""The OpenAPI schema of the API, as committed in docs/openapi.json.

python -m newbie.serve.openapi > docs/openapi.json
"""

from __future__ import annotations

import json


def schema() -> dict:
    from newbie.serve.app import create_app

    return create_app(None).openapi()


def schema_text() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(schema_text(), end="")
