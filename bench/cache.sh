#!/usr/bin/env bash
# Times building the serve cache of a compressed archive (the time from
# `vmaconv serve ARCHIVE` starting, cache cold, to its URI printed) against
# restoring the archive's first disk, N alternating rounds:
#   bench/cache.sh ARCHIVE.vma.zst [N]
# bench/compare.sh leaves one in /dev/shm/vmaconv-compare/disk.vma.zst.
set -euo pipefail
arc=$1 n=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/vmaconv-cache.XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$root" && go build -o "$work/vmaconv" ./cmd/vmaconv)
V=$work/vmaconv
cache=() restore=()
dev=$("$V" info --output json "$arc" | sed -n 's/.*"name": *"\(drive-[^"]*\)".*/\1/p' | head -1)
[[ -n $dev ]] || { echo "cache.sh: no disk in $arc" >&2; exit 1; }
for ((i = 1; i <= n; i++)); do
  rm -rf "$work/cache" "$work/out.raw"
  : > "$work/serve.out"
  s=$EPOCHREALTIME
  "$V" serve --cache-dir "$work/cache" --socket "$work/s.sock" "$arc" > "$work/serve.out" &
  pid=$!
  until grep -q 'nbd+unix:' "$work/serve.out"; do
    kill -0 "$pid" 2>/dev/null || { echo "cache.sh: serve failed" >&2; exit 1; }
    sleep 0.005
  done
  e=$EPOCHREALTIME
  kill "$pid"; wait "$pid" || true
  s2=$EPOCHREALTIME
  "$V" "$arc:$dev" "$work/out.raw"
  e2=$EPOCHREALTIME
  awk -v a="$s" -v b="$e" -v c="$s2" -v d="$e2" -v i="$i" \
    'BEGIN { printf "round %d: cache build %.3f s, restore %.3f s\n", i, b - a, d - c }'
  cache+=("$(awk -v a="$s" -v b="$e" 'BEGIN { print b - a }')")
  restore+=("$(awk -v a="$s2" -v b="$e2" 'BEGIN { print b - a }')")
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
c=$(median "${cache[@]}") r=$(median "${restore[@]}")
awk -v c="$c" -v r="$r" -v n="$n" 'BEGIN { printf "median of %d: cache build %.3f s, restore %.3f s: %.2f× of the restore\n", n, c, r, c / r }'
