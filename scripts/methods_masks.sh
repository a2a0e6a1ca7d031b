#!/usr/bin/env bash
# Masks of the other methods for the bundled models at K=50 (see scripts/methods_masks.py).
exec python "$(dirname "$0")/methods_masks.py" "$@"
