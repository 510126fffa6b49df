#!/bin/sh
# Retrieval evaluation of the codemap engine against plain BM25 (see README.md).
#
# Usage: shared/codemap/eval/run.sh [GIT_DIR ...]
#   GIT_DIRs are local git repositories (bare or not); without arguments the
#   space-separated CODEMAP_EVAL_REPOS is used, else the default mirrors below.
#   CODEMAP_EVAL_PER_REPO (default 60) caps the cases per repository.
# Nothing is fetched: the repositories must already be on this machine.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
mirror=${CODEMAP_EVAL_MIRROR:-/work/.mirror}
default="$mirror/psf+requests/repo $mirror/spf13+cobra/repo $mirror/BurntSushi+ripgrep/repo $mirror/google+gson/repo $mirror/sindresorhus+ky/repo"
if [ "$#" -gt 0 ]; then
    repos="$*"
else
    repos=${CODEMAP_EVAL_REPOS:-$default}
fi
for r in $repos; do
    if ! git --git-dir "$r" rev-parse --verify -q HEAD >/dev/null 2>&1 && ! git -C "$r" rev-parse --verify -q HEAD >/dev/null 2>&1; then
        echo "eval: $r is not a git repository on this machine" >&2
        exit 2
    fi
done
cd "$root"
# shellcheck disable=SC2086
exec cargo run --quiet --release -p contexten-codemap --bin codemap-eval -- \
    --per-repo "${CODEMAP_EVAL_PER_REPO:-60}" $repos
