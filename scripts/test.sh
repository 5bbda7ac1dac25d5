#!/usr/bin/env bash
# Install oringscan with its test extra (torch from the local wheel cache where present), run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.14.1 torchvision==0.29.1
python -m pip install -q -e ".[test]"
python -m pytest -q -p no:cacheprovider "$@"
