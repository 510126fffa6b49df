#!/bin/sh
# Retrieval evaluation of the codemap engine against plain and code-aware BM25
# on a fixed tuning / test split of repositories (see README.md, split.toml).
#
# Usage: shared/codemap/eval/run.sh [codemap-eval options] [GIT_DIR ...]
#   Without GIT_DIRs the repositories of split.toml are read from
#   $CODEMAP_EVAL_MIRROR/<owner>+<name>/repo (default /work/.mirror); the
#   missing ones are listed, the others scored.
#   CODEMAP_EVAL_PER_REPO (default 60) caps the cases per repository,
#   CODEMAP_EVAL_COLD (default 3) is the number of cold-process queries timed
#   per test repository. Extra options: --set test|tuning, --fit, --levers.
# Nothing is fetched: the repositories must already be on this machine, as
# full-history clones (the session's fetch tool puts them under /work/.mirror;
# elsewhere `git clone --bare https://github.com/<owner>/<name> <mirror>/<owner>+<name>/repo`).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
mirror=${CODEMAP_EVAL_MIRROR:-/work/.mirror}
missing=""
for name in $(sed -n 's/^name = "\(.*\)"/\1/p' "$here/split.toml"); do
    d="$mirror/$(echo "$name" | tr / +)/repo"
    if ! git --git-dir "$d" rev-parse --verify -q HEAD >/dev/null 2>&1; then
        missing="$missing $name"
    fi
done
if [ -n "$missing" ]; then
    echo "eval: missing under $mirror (need full-history clones at <owner>+<name>/repo):$missing" >&2
    echo "eval: get them with the session's fetch tool, or: git clone --bare https://github.com/<owner>/<name> $mirror/<owner>+<name>/repo" >&2
    echo "eval: scoring the repositories that are present" >&2
fi
cd "$root"
exec cargo run --quiet --release -p contexten-codemap --bin codemap-eval -- \
    --mirror "$mirror" --split "$here/split.toml" \
    --per-repo "${CODEMAP_EVAL_PER_REPO:-60}" --cold "${CODEMAP_EVAL_COLD:-3}" "$@"
