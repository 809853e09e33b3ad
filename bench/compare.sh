#!/usr/bin/env bash
# Times vmaconv against floors (cat, cp --sparse=always with and without
# sync, zstd) and peers (qemu-img convert, Proxmox's vma where installed)
# on the same generated data, in the same run,
# alternating the commands round by round, and prints medians, ratios and
# peak RSS: one table per data directory (by default the disk and, where it
# is a tmpfs, /dev/shm, since users have both). Every output of every
# round, the floors' and peers' as well as vmaconv's, is checked against
# its input, between timed runs, two at a time: raw images and cp copies
# by content digest (bench/diskcheck: holes not read, hashed on every
# core); archives by diskcheck's own VMA reader, written from the format
# facts and independent of vmaconv's, and, where Proxmox's vma is
# installed, by `vma verify` and by `vma extract` and a digest of what it
# extracts; qcow2 images by `qemu-img check` and `qemu-img compare`; zstd's
# output by the digest of what it decompresses to. cat and zstd -d write to
# /dev/null: their exit status is all they give. A failed command or a
# wrong output fails the script.
#
#   bench/compare.sh [-s SIZE] [-S SPARSE_SIZE] [-n RUNS] [-d DIR]...
#
# SIZE (default 1G) is the dense test disk: half its 4 KiB blocks zero, the
# rest random (not compressible); it is also converted to qcow2 with plain
# and with extended L2 entries, and into a qcow2 of 4×SIZE with
# preallocated metadata (Proxmox's default). SPARSE_SIZE (default 20G) is a sparse disk
# holding 4 MiB; an empty 1 TiB qcow2 is the extreme. vmaconv runs with its
# default (outputs synced) and with -t unsafe. RUNS (default 5) rounds.
# Each DIR holds a copy of the data (needs about 8×SIZE free; default
# $TMPDIR/vmaconv-compare and /dev/shm/vmaconv-compare). Peers missing
# from the machine (qemu-img, zstd, vma) are left out, and it says so.
set -euo pipefail
size=1G sparse=20G runs=5 dirs=()
while getopts s:S:n:d:h opt; do
  case $opt in
    s) size=$OPTARG ;; S) sparse=$OPTARG ;; n) runs=$OPTARG ;; d) dirs+=("$OPTARG") ;;
    *) sed -n '2,29p' "$0"; exit 2 ;;
  esac
done
if ((${#dirs[@]} == 0)); then
  dirs=("${TMPDIR:-/tmp}/vmaconv-compare")
  [[ $(stat -f -c %T /dev/shm 2>/dev/null) == tmpfs ]] && dirs+=(/dev/shm/vmaconv-compare)
fi
root=$(cd "$(dirname "$0")/.." && pwd)
have() { command -v "$1" >/dev/null; }
[[ -x /usr/bin/time ]] || { echo "compare.sh needs /usr/bin/time (Debian package 'time')" >&2; exit 1; }
missing=()
have qemu-img || missing+=("qemu-img (qemu-utils): qcow2 cases and peers left out")
have zstd || missing+=("zstd: compressed cases left out")
have vma || missing+=("Proxmox's vma: not on this machine, not compared")
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
echo "building vmaconv, gendisk and diskcheck" >&2
go build -C "$root" -o "$bin/vmaconv" ./cmd/vmaconv
go build -C "$root" -o "$bin/gendisk" ./bench/gendisk
go build -C "$root" -o "$bin/diskcheck" ./bench/diskcheck
V=$bin/vmaconv D=$bin/diskcheck
# migrations: NAME|FORMAT|OPTIONS of the migration formats this vmaconv
# writes (issue 21), each timed both ways against qemu-img in two steps.
migrations=()
for m in "vmdk-stream|vmdk|subformat=streamOptimized" "vmdk-sparse|vmdk|subformat=monolithicSparse" \
  "vpc-fixed|vpc|subformat=fixed" "vpc-dynamic|vpc|subformat=dynamic" "vhdx|vhdx|" "vdi|vdi|"; do
  IFS='|' read -r mn mf mo <<< "$m"
  if "$V" -O "$mf" -o help > /dev/null 2>&1; then
    migrations+=("$m")
  elif [[ " ${missing[*]} " != *" $mf: "* ]]; then
    missing+=("$mf: this vmaconv does not write it")
  fi
done

fail() { echo "compare.sh: $*" >&2; exit 1; }

# digest FILE [SIZE]: "DIGEST BYTES" of a raw image (zero-extended to SIZE).
digest() {
  local line
  line=$("$D" raw ${2:+-size "$2"} "$1") || return 1
  cut -d' ' -f2,3 <<< "$line"
}

# verify KIND PATH WANT: checks one output, says what is wrong if it is.
#   raw      PATH is a raw image whose digest is WANT
#   dir      PATH is a directory written by vma extract: one disk-*.raw, WANT
#   vma      PATH is an archive with one disk, WANT
#   vma.zst  the same, compressed with zstd
#   zst      PATH decompresses to bytes whose digest is WANT
#   qcow2    PATH is a consistent qcow2 image with the content of raw image WANT
#   vmdk, vhdx, vdi, vpc: the same for those formats (qemu-img check has
#            no vpc checker: VHDs are compared only)
verify() {
  local kind=$1 p=$2 want=$3 got lines
  case $kind in
    raw) got=$(digest "$p") || return 1 ;;
    dir)
      local disks=("$p"/disk-*.raw)
      [[ ${#disks[@]} == 1 && -f ${disks[0]} ]] || { echo "$p: ${#disks[@]} disk-*.raw files, want 1"; return 1; }
      got=$(digest "${disks[0]}") || return 1 ;;
    vma | vma.zst)
      if [[ $kind == vma ]]; then
        lines=$("$D" vma "$p") || return 1
      else
        lines=$(zstd -q -d -c "$p" | "$D" vma -) || return 1
      fi
      got=$(grep '^disk ' <<< "$lines" | cut -d' ' -f2,3) || true
      if have vma; then
        local in=$p x=chk/${p##*/}.x
        [[ $kind == vma.zst ]] && { zstd -q -d -c "$p" > "chk/${p##*/}.vma" || return 1; in=chk/${p##*/}.vma; }
        vma verify "$in" || { echo "vma verify refuses $p"; return 1; }
        vma extract "$in" "$x" > /dev/null || { echo "vma extract refuses $p"; return 1; }
        verify dir "$x" "$want" || return 1
      fi ;;
    zst) got=$(zstd -q -d -c "$p" | "$D" raw - | cut -d' ' -f2,3) || return 1 ;;
    qcow2 | vmdk | vhdx | vdi | vpc)
      # qemu-img check has no vpc checker; compare reads every VHD.
      if [[ $kind != vpc ]]; then qemu-img check -q -f "$kind" "$p" || { echo "qemu-img check fails on $p"; return 1; }; fi
      qemu-img compare -q -f raw -F "$kind" "$want" "$p" || { echo "qemu-img compare: $p differs from $want"; return 1; }
      return 0 ;;
    *) echo "verify: unknown kind $kind"; return 1 ;;
  esac
  [[ $got == "$want" ]] || { echo "$p: content $got, want $want"; return 1; }
}

# bench DIR: the whole comparison with the data in DIR.
bench() {
  local dir=$1
  mkdir -p "$dir"
  cd "$dir"
  echo "generating data in $dir: $size dense disk, $sparse sparse disk" >&2
  [[ -f disk.raw && $(cat disk.size 2>/dev/null) == "$size" ]] || { "$bin/gendisk" -size "$size" -out disk.raw; echo "$size" > disk.size; }
  [[ -f sparse.raw && $(cat sparse.size 2>/dev/null) == "$sparse" ]] || { "$bin/gendisk" -size "$sparse" -sparse 4M -out sparse.raw; echo "$sparse" > sparse.size; }
  rm -f disk.vma disk.qcow2 disk.vma.zst extl2.qcow2 prealloc.qcow2 empty1t.qcow2 disk.vmdk-* disk.vpc-* disk.vhdx disk.vdi out.*
  rm -rf out.d
  "$V" -f raw disk.raw disk.vma --uuid 6f1c2b9e-3c4d-4e5f-8a9b-0c1d2e3f4a5b --ctime 1718000000
  if have qemu-img; then
    qemu-img convert -f raw -O qcow2 disk.raw disk.qcow2
    qemu-img convert -f raw -O qcow2 -o extended_l2=on disk.raw extl2.qcow2
    qemu-img create -q -f qcow2 -o preallocation=metadata prealloc.qcow2 $(($(stat -c %s disk.raw) * 4))
    qemu-img convert -n -f raw -O qcow2 disk.raw prealloc.qcow2
    qemu-img create -q -f qcow2 empty1t.qcow2 1T
  fi
  have zstd && zstd -q -T0 disk.vma -o disk.vma.zst
  # The migration formats (issue 21): each as qemu-img writes it, the
  # input of its → VMA case.
  if have qemu-img; then
    for m in "${migrations[@]}"; do
      IFS='|' read -r mn mf mo <<< "$m"
      qemu-img convert -f raw -O "$mf" ${mo:+-o "$mo"} disk.raw "disk.$mn"
    done
  fi
  # What the outputs must hold, and the inputs vmaconv or qemu-img made,
  # checked once.
  local sum sparsesum presum emptysum vmasum
  echo "checking the inputs" >&2
  sum=$(digest disk.raw) sparsesum=$(digest sparse.raw) vmasum=$(digest disk.vma)
  presum=$(digest disk.raw $(($(stat -c %s disk.raw) * 4)))
  : > empty.raw
  emptysum=$(digest empty.raw $((1 << 40)))
  rm -rf chk; mkdir chk
  verify vma disk.vma "$sum" > chk/in.log 2>&1 || fail "disk.vma: $(tail -2 chk/in.log)"
  if have zstd; then verify vma.zst disk.vma.zst "$sum" > chk/in.log 2>&1 || fail "disk.vma.zst: $(tail -2 chk/in.log)"; fi
  rm -rf chk/*
  if have qemu-img; then
    for q in disk.qcow2 extl2.qcow2 prealloc.qcow2; do
      qemu-img compare -q -f raw -F qcow2 disk.raw "$q" || fail "$q (made by qemu-img) differs from disk.raw"
    done
  fi
  # What an archive of each migration input holds: the disk, with zeros up
  # to the input's virtual size (qemu-img rounds a VHD up to whole CHS
  # cylinders: 1 GiB becomes 1,073,995,776 bytes). The first virtual-size
  # is the image's; a VMDK's extents have their own.
  declare -gA msum
  msum=()
  if have qemu-img; then
    for m in "${migrations[@]}"; do
      IFS='|' read -r mn mf mo <<< "$m"
      local vsize
      vsize=$(qemu-img info -f "$mf" --output json "disk.$mn" | sed -n 's/^ *"virtual-size": \([0-9]*\),*$/\1/p' | head -n 1)
      [[ -n $vsize ]] || fail "disk.$mn: qemu-img info gives no virtual size"
      msum[$mn]=$(digest disk.raw "$vsize")
    done
  fi
  cat disk.* sparse.raw $(ls extl2.qcow2 prealloc.qcow2 empty1t.qcow2 2>/dev/null) > /dev/null # into the page cache

  declare -gA times rss
  times=() rss=()
  queue=() checked=0 checktime=0 runtime=0
  # t NAME KIND OUT WANT CMD...: one timed run after removing outputs and
  # syncing; then its output OUT is kept aside and checked (verify KIND
  # OUT WANT), two outputs at a time, before the next timed run. KIND -:
  # nothing to check (the output went to /dev/null).
  t() {
    local name=$1 kind=$2 out=$3 want=$4; shift 4
    rm -rf out.*; sync
    local start=$EPOCHREALTIME # microseconds; /usr/bin/time's %e has 10 ms steps
    /usr/bin/time -f "%M" -o time.out "$@" > /dev/null 2> err.out || fail "$name failed: $(tail -2 err.out)"
    local sec kb
    sec=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.4f", b - a}')
    read -r kb < time.out
    times[$name]+="$sec "
    runtime=$(awk -v a="$runtime" -v b="$sec" 'BEGIN {print a + b}')
    (( kb > ${rss[$name]:-0} )) && rss[$name]=$kb
    if [[ $kind != - ]]; then
      [[ -e $out ]] || fail "$name: no output $out"
      local kept=chk/$name.${out#out.}
      mv "$out" "$kept"
      queue+=("$name|$kind|$kept|$want")
      (( ${#queue[@]} < 2 )) || check_queue
    fi
    return 0
  }
  # check_queue verifies the queued outputs in parallel and removes them.
  check_queue() {
    local start=$EPOCHREALTIME pids=() i n k p w bad=""
    for i in "${!queue[@]}"; do
      IFS='|' read -r n k p w <<< "${queue[$i]}"
      verify "$k" "$p" "$w" > "$p.log" 2>&1 &
      pids[i]=$!
    done
    for i in "${!queue[@]}"; do
      IFS='|' read -r n k p w <<< "${queue[$i]}"
      wait "${pids[$i]}" || bad+="$n (round $round): wrong output: $(tail -3 "$p.log")"$'\n'
    done
    [[ -z $bad ]] || fail "$bad"
    checked=$((checked + ${#queue[@]}))
    checktime=$(awk -v a="$checktime" -v b="$start" -v c="$EPOCHREALTIME" 'BEGIN {print a + c - b}')
    rm -rf chk/*
    queue=()
  }
  for ((round = 1; round <= runs; round++)); do
    echo "round $round of $runs ($dir)" >&2
    t cat - "" "" sh -c 'cat disk.raw > /dev/null'
    t cp raw out.cp "$sum" cp --sparse=always disk.raw out.cp
    t cp+sync raw out.cp "$sum" sh -c 'cp --sparse=always disk.raw out.cp && sync out.cp'
    t create vma out.vma "$sum" "$V" -f raw disk.raw out.vma
    t create-unsafe vma out.vma "$sum" "$V" -t unsafe -f raw disk.raw out.vma
    t restore raw out.raw "$sum" "$V" disk.vma out.raw
    t restore-unsafe raw out.raw "$sum" "$V" -t unsafe disk.vma out.raw
    if have vma; then
      t vma-create vma out.vma "$sum" vma create out.vma drive-scsi0=disk.raw
      t vma-extract dir out.d "$sum" vma extract disk.vma out.d
    fi
    if have qemu-img; then
      t vma-qcow2 qcow2 out.qcow2 disk.raw "$V" disk.vma out.qcow2
      t two-step qcow2 out.qcow2 disk.raw sh -c "$V disk.vma out.raw && qemu-img convert -f raw -O qcow2 out.raw out.qcow2"
      t raw-qcow2 qcow2 out.qcow2 disk.raw "$V" -f raw disk.raw out.qcow2
      t qemu-img-qcow2 qcow2 out.qcow2 disk.raw qemu-img convert -f raw -O qcow2 disk.raw out.qcow2
      t qemu-img-raw raw out.raw "$sum" qemu-img convert -O raw disk.qcow2 out.raw
      t qcow2-raw raw out.raw "$sum" "$V" disk.qcow2 out.raw
      t qcow2-vma vma out.vma "$sum" "$V" disk.qcow2 out.vma
      t extl2-raw raw out.raw "$sum" "$V" extl2.qcow2 out.raw
      t qemu-img-extl2 raw out.raw "$sum" qemu-img convert -O raw extl2.qcow2 out.raw
      t prealloc-raw raw out.raw "$presum" "$V" prealloc.qcow2 out.raw
      t qemu-img-prealloc raw out.raw "$presum" qemu-img convert -O raw prealloc.qcow2 out.raw
      t empty-raw raw out.raw "$emptysum" "$V" empty1t.qcow2 out.raw
      t qemu-img-empty raw out.raw "$emptysum" qemu-img convert -O raw empty1t.qcow2 out.raw
      for m in "${migrations[@]}"; do
        IFS='|' read -r mn mf mo <<< "$m"
        t "vma-$mn" "$mf" "out.$mn" disk.raw "$V" -O "$mf" ${mo:+-o "$mo"} disk.vma "out.$mn"
        t "two-step-$mn" "$mf" "out.$mn" disk.raw sh -c "$V disk.vma out.raw && qemu-img convert -f raw -O $mf ${mo:+-o $mo} out.raw out.$mn"
        t "$mn-vma" vma out.vma "${msum[$mn]}" "$V" -f "$mf" "disk.$mn" out.vma
        t "two-step-$mn-vma" vma out.vma "${msum[$mn]}" sh -c "qemu-img convert -f $mf -O raw disk.$mn out.raw && $V -f raw out.raw out.vma"
      done
    fi
    if have zstd; then
      t zstd-d - "" "" sh -c 'zstd -q -d -c disk.vma.zst > /dev/null'
      t zstd-T2 zst out.zst "$vmasum" zstd -q -T2 disk.vma -o out.zst
      t create-zst vma.zst out.vma.zst "$sum" "$V" -f raw disk.raw out.vma.zst
      t restore-zst raw out.raw "$sum" "$V" disk.vma.zst out.raw
      have qemu-img && t zst-qcow2 qcow2 out.qcow2 disk.raw "$V" disk.vma.zst:drive-scsi0 out.qcow2
    fi
    t sparse-cp raw out.cp "$sparsesum" cp --sparse=always sparse.raw out.cp
    t sparse-vma vma out.vma "$sparsesum" "$V" -f raw sparse.raw out.vma
    check_queue
  done
  rm -rf out.* chk empty.raw time.out err.out

  median() { tr ' ' '\n' <<< "${times[$1]:-}" | { grep . || true; } | sort -g | awk '{a[NR]=$1} END {if (NR) printf "%.3f", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a != "" && b > 0) printf "%.2f×", a/b; else printf "–"}'; }
  row() { # row CASE VMACONV-NAME FLOOR-NAME [FLOOR2-NAME]
    local m f f2 extra=""
    m=$(median "$2") f=$(median "$3")
    [[ -n $m && -n $f ]] || return 0 # a case or its peer not run here
    if [[ -n ${4:-} ]]; then f2=$(median "$4"); extra=" / $(ratio "$m" "$f2") of $4 ($f2 s)"; fi
    printf "| %s | %s s | %s (%s s) | %s%s | %s MiB |\n" "$1" "$m" "$3" "$f" "$(ratio "$m" "$f")" "$extra" "$(( ${rss[$2]:-0} / 1024 ))"
  }
  slower() { awk -v a="$(median "$1")" -v b="$(median "$2")" 'BEGIN {print (a > b ? a : b)}'; }

  echo
  echo "### $dir ($(stat -f -c %T "$dir"))"
  echo
  echo "| case | vmaconv | floor or peer | ratio | peak RSS |"
  echo "|---|---|---|---|---|"
  row "create (raw → VMA)" create cp cp+sync
  row "restore (VMA → sparse raw)" restore cp cp+sync
  row "VMA → qcow2" vma-qcow2 restore two-step
  row "raw → qcow2" raw-qcow2 qemu-img-qcow2 cp+sync
  row "qcow2 → raw" qcow2-raw qemu-img-raw cp+sync
  row "qcow2 → VMA" qcow2-vma cp cp+sync
  row "create, -t unsafe" create-unsafe cp
  row "restore, -t unsafe" restore-unsafe cp
  row "create vs Proxmox vma create" create vma-create
  row "restore vs Proxmox vma extract" restore vma-extract
  row "extended-L2 qcow2 → raw" extl2-raw qcow2-raw qemu-img-extl2
  row "preallocated qcow2 (4× the disk) → raw" prealloc-raw qemu-img-prealloc
  row "empty 1 TiB qcow2 → raw" empty-raw qemu-img-empty
  if [[ -n ${times[restore-zst]:-} ]]; then
    times[zstd-or-restore]=$(slower zstd-d restore)
    row "restore from .vma.zst" restore-zst zstd-or-restore zstd-d
    times[create+zstd]=$(awk -v a="$(median create)" -v b="$(median zstd-T2)" 'BEGIN {print a + b}')
    row "create .vma.zst" create-zst create+zstd zstd-T2
    row ".vma.zst → qcow2 (stream)" zst-qcow2 vma-qcow2
  fi
  row "$sparse sparse raw (4 MiB data) → VMA" sparse-vma sparse-cp
  for m in "${migrations[@]}"; do
    IFS='|' read -r mn mf mo <<< "$m"
    row "VMA → $mn" "vma-$mn" "two-step-$mn" vma-qcow2
    row "$mn → VMA" "$mn-vma" "two-step-$mn-vma" qcow2-vma
  done
  echo
  echo "Every output checked: $checked in all, in $(printf %.1f "$checktime") s, beside $(printf %.1f "$runtime") s of timed runs."
  cd - > /dev/null
}

for d in "${dirs[@]}"; do bench "$d"; done > "$bin/tables"
echo
echo "vmaconv $("$V" --version 2>&1 | awk '{print $2}') on $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $size disk, $sparse sparse disk; median of $runs alternating runs; data in page cache"
cat "$bin/tables"
echo
echo "cp = cp --sparse=always; cp+sync adds 'sync FILE' (vmaconv fsyncs its output before renaming it);"
echo "two-step = vmaconv restore to raw, then qemu-img convert -O qcow2 (for VMA → FMT: -O FMT; for FMT → VMA: qemu-img convert -O raw, then vmaconv create);"
echo "the extra ratio of VMA → FMT is to VMA → qcow2, of FMT → VMA to qcow2 → VMA (issue 21's targets: ≤ 0.5× two-step, ≤ 1.2× qcow2); zstd-or-restore = the slower of 'zstd -d' and the plain restore;"
echo "create+zstd = the plain create plus 'zstd -T2' of the archive; qemu-img-* = qemu-img convert -O raw of the same image (cache mode unsafe, its default)."
for m in "${missing[@]}"; do echo "not compared: $m"; done
