#!/usr/bin/env bash
# Times vmaconv against floors (cat, cp --sparse=always) and peers (qemu-img
# convert, zstd -d) on the same generated data, in the same run, alternating
# the commands round by round, and prints medians, ratios and peak RSS.
#
#   bench/compare.sh [-s SIZE] [-S SPARSE_SIZE] [-n RUNS] [-d DIR]
#
# SIZE (default 1G) is the dense test disk: half its 4 KiB blocks zero, the
# rest random (not compressible). SPARSE_SIZE (default 20G) is a sparse disk
# holding 4 MiB. RUNS (default 5) rounds. DIR holds the data (default
# $TMPDIR/vmaconv-compare; needs about 3×SIZE free). Tools missing from the
# machine are left out of the table.
set -euo pipefail
size=1G sparse=20G runs=5 dir=${TMPDIR:-/tmp}/vmaconv-compare
while getopts s:S:n:d:h opt; do
  case $opt in
    s) size=$OPTARG ;; S) sparse=$OPTARG ;; n) runs=$OPTARG ;; d) dir=$OPTARG ;;
    *) sed -n '2,13p' "$0"; exit 2 ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$dir"
cd "$dir"
have() { command -v "$1" >/dev/null; }
[[ -x /usr/bin/time ]] || { echo "compare.sh needs /usr/bin/time (Debian package 'time')" >&2; exit 1; }

echo "building vmaconv and gendisk" >&2
go build -C "$root" -o "$dir/vmaconv" ./cmd/vmaconv
go build -C "$root" -o "$dir/gendisk" ./bench/gendisk
echo "generating data: $size dense disk, $sparse sparse disk" >&2
[[ -f disk.raw && $(cat disk.size 2>/dev/null) == "$size" ]] || { ./gendisk -size "$size" -out disk.raw; echo "$size" > disk.size; }
[[ -f sparse.raw && $(cat sparse.size 2>/dev/null) == "$sparse" ]] || { ./gendisk -size "$sparse" -sparse 4M -out sparse.raw; echo "$sparse" > sparse.size; }
rm -f disk.vma disk.qcow2 disk.vma.zst
./vmaconv -f raw disk.raw disk.vma --uuid 6f1c2b9e-3c4d-4e5f-8a9b-0c1d2e3f4a5b --ctime 1718000000
have qemu-img && qemu-img convert -f raw -O qcow2 disk.raw disk.qcow2
have zstd && zstd -q -T0 disk.vma -o disk.vma.zst
cat disk.* > /dev/null # into the page cache

declare -A times rss
# t NAME CMD...: one timed run; outputs are removed and the disk synced first.
t() {
  local name=$1; shift
  rm -f out.*; sync
  /usr/bin/time -f "%e %M" -o time.out "$@" > /dev/null 2> err.out || { echo "$name failed: $(tail -2 err.out)" >&2; return; }
  read -r sec kb < time.out
  times[$name]+="$sec "
  (( kb > ${rss[$name]:-0} )) && rss[$name]=$kb
  return 0
}
for ((i = 1; i <= runs; i++)); do
  echo "round $i of $runs" >&2
  t cat sh -c 'cat disk.raw > /dev/null'
  t cp cp --sparse=always disk.raw out.cp
  t cp+sync sh -c 'cp --sparse=always disk.raw out.cp && sync out.cp'
  t create ./vmaconv -f raw disk.raw out.vma
  t restore ./vmaconv disk.vma out.raw
  if have qemu-img; then
    t qemu-img-raw qemu-img convert -O raw disk.qcow2 out.qraw
    t qcow2-raw ./vmaconv disk.qcow2 out.raw
    t qcow2-vma ./vmaconv disk.qcow2 out.vma
  fi
  if have zstd; then
    t zstd-d sh -c 'zstd -q -d -c disk.vma.zst > /dev/null'
    t restore-zst ./vmaconv disk.vma.zst out.raw
  fi
  t sparse-cp cp --sparse=always sparse.raw out.cp
  t sparse-vma ./vmaconv -f raw sparse.raw out.vma
done
rm -f out.* time.out err.out

median() { tr ' ' '\n' <<< "${times[$1]:-}" | grep . | sort -g | awk '{a[NR]=$1} END {if (NR) printf "%.3f", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a != "" && b > 0) printf "%.2f×", a/b; else printf "–"}'; }
row() { # row CASE VMACONV-NAME FLOOR-NAME [FLOOR2-NAME]
  local m f f2
  m=$(median "$2") f=$(median "$3")
  [[ -n $m ]] || return 0
  local extra=""
  if [[ -n ${4:-} ]]; then f2=$(median "$4"); extra=" / $(ratio "$m" "$f2") of $4 ($f2 s)"; fi
  printf "| %s | %s s | %s (%s s) | %s%s | %s MiB |\n" "$1" "$m" "$3" "$f" "$(ratio "$m" "$f")" "$extra" "$(( ${rss[$2]:-0} / 1024 ))"
}
slower() { awk -v a="$(median "$1")" -v b="$(median "$2")" 'BEGIN {print (a > b ? a : b)}'; }

echo
echo "vmaconv $(./vmaconv --version 2>&1 | awk '{print $2}') on $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $size disk, $sparse sparse disk; median of $runs alternating runs"
echo
echo "| case | vmaconv | floor | ratio | peak RSS |"
echo "|---|---|---|---|---|"
row "create (raw → VMA)" create cp cp+sync
row "restore (VMA → sparse raw)" restore cp cp+sync
row "qcow2 → raw" qcow2-raw qemu-img-raw cp+sync
row "qcow2 → VMA" qcow2-vma cp cp+sync
if [[ -n ${times[restore-zst]:-} ]]; then
  floor=$(slower zstd-d restore)
  times[zstd-or-restore]=$floor
  row "restore from .vma.zst" restore-zst zstd-or-restore zstd-d
fi
row "$sparse sparse raw (4 MiB data) → VMA" sparse-vma sparse-cp
echo
echo "floors: cat $(median cat) s; cp = cp --sparse=always; cp+sync adds 'sync FILE' (vmaconv fsyncs its output before renaming it);"
echo "zstd-or-restore = the slower of 'zstd -d' alone and the uncompressed restore."
