package manpage

// Vmaconv returns vmaconv's page: what Write puts around kong's model of
// the CLI, for the build's date and version (source).
func Vmaconv(date, source string) *Page {
	return &Page{
		Section: "1",
		Date:    date,
		Source:  source,
		Manual:  "User Commands",
		Summary: "convert disk images to and from Proxmox VMA backups, and read,\ncheck, compare and restore the backups",
		Description: []string{
			`vmaconv is to Proxmox VE backup archives (VMA, the vzdump-qemu-*.vma files vzdump writes, and their .vma.zst, .vma.gz and .vma.lzo compressions) what qemu-img is to disk images, with qemu-img's habits: vmaconv SRC DST converts (the convert command); -f, -O, -n, -m, -p, -q and -t mean what they mean to qemu-img; compare and map print what qemu-img compare and qemu-img map print.`,
			`A disk is named as a file (a raw or qcow2 image), as ARCHIVE:DEVICE (vm.vma:drive-scsi0, or by its Proxmox key, vm.vma:scsi0), or as an archive that holds one disk. - reads an archive from standard input; its devices are named after --, as in vmaconv checksum -- -:scsi0. Formats are recognised by their magic bytes; anything else is raw, with a note. A destination's format comes from -O or its extension: .vma, .vma.zst and .vma.gz are archives, .qcow2 a qcow2 image, .raw and .img raw; any other name is raw with a note, and the suffixes of compressors vmaconv does not write (.bz2, .xz, .lz4, ...) are refused.`,
			`Outputs are written to a temporary file beside the destination and renamed into place only when complete; an existing file is replaced only with --overwrite. Errors are one line naming what and where. Notes come on standard error when a command ends, never before a failure's line; -q silences them.`,
		},
		ExitStatus: []Item{
			{Tag: "0", Text: "Success; for compare, the disks are identical."},
			{Tag: "1", Text: "Failure (one line on standard error says what and where); for compare, the disks differ (the first differing offset is printed)."},
			{Tag: "2", Text: "A usage error: an unknown command or flag, a missing argument, a bad value, a refused destination; for compare, a disk could not be opened."},
			{Tag: "3", Text: "extract --salvage wrote what it could of a damaged archive, and reported what it could not; for compare, a disk's map of zeros could not be read."},
			{Tag: "4", Text: "For compare, a disk could not be read (as qemu-img compare)."},
			{Tag: "128+N", Text: "Ended by signal N: 130 for SIGINT (Ctrl-C), 143 for SIGTERM. Partial outputs are removed."},
		},
		Environment: []Item{
			{Tag: "XDG_CACHE_HOME", Text: "Where the decompression cache is kept: $XDG_CACHE_HOME/vmaconv (see FILES)."},
			{Tag: "HOME", Text: "The cache is in ~/.cache/vmaconv when XDG_CACHE_HOME is not set."},
			{Tag: "XDG_RUNTIME_DIR", Text: "Where serve puts its Unix socket unless --socket names one."},
			{Tag: "TMPDIR", Text: "Where serve puts its socket when XDG_RUNTIME_DIR is not set (default /tmp)."},
			{Tag: "COMP_LINE, COMP_POINT", Text: "Set by the shell to ask vmaconv for tab completions (see the completion command); vmaconv then prints the candidates and exits."},
		},
		Files: []Item{
			{Tag: "$XDG_CACHE_HOME/vmaconv/, else ~/.cache/vmaconv/", Text: "The decompression cache: serve, mount, compare and map read a compressed archive (.vma.zst that is not seekable, .vma.gz, .vma.lzo) at random through a decompressed copy of it, made once, checked, and reused while the archive keeps its path, size, time and inode. --cache-dir names another directory."},
			{Tag: "$XDG_RUNTIME_DIR/vmaconv-PID.sock", Text: "The Unix socket of serve (else in TMPDIR), for the owner only, removed when serve ends."},
			{Tag: "DIR/.vmaconv-*.tmp", Text: "An output being written beside its destination; renamed into place when complete, removed on failure or interruption."},
		},
		Examples: []Example{
			{Text: "Convert an image into an archive Proxmox restores, and back:", Lines: []string{"vmaconv disk.qcow2 vm.vma", "vmaconv vm.vma:drive-scsi0 disk.raw"}},
			{Text: "Write a backup that qmrestore finds, named as vzdump names it:", Lines: []string{"vmaconv disk.qcow2 /var/lib/vz/dump/ --vmid 120 --compress zstd"}},
			{Text: "Show and check an archive, then restore its disks and configs:", Lines: []string{"vmaconv info vzdump-qemu-100.vma.zst", "vmaconv verify vzdump-qemu-100.vma.zst", "vmaconv extract vzdump-qemu-100.vma.zst restored/"}},
			{Text: "Prove that a conversion kept every byte:", Lines: []string{"vmaconv compare vm.vma:scsi0 disk.qcow2", "vmaconv map --output json vm.vma:scsi0"}},
			{Text: "Restore one disk onto a block device, from a pipe:", Lines: []string{"ssh pve cat /var/lib/vz/dump/vzdump-qemu-100.vma.zst |", "  vmaconv -n -- -:scsi0 /dev/sdX"}},
			{Text: "Read a backup's disks without restoring them:", Lines: []string{"vmaconv serve vzdump-qemu-100.vma.zst", "vmaconv mount vzdump-qemu-100.vma /mnt/backup"}},
			{Text: "Enable tab completion in bash:", Lines: []string{"source <(vmaconv completion bash)"}},
		},
		SeeAlso: []string{"qemu-img(1)", "vzdump(1)", "qmrestore(1)", "qm(1)", "zstd(1)"},
	}
}
