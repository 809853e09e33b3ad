package format

import (
	"context"
	"time"
)

// What formats that hold several disks and configs (archives, Format.Multi)
// offer beyond reading and writing disks: the rules of the tools that
// restore their archives, applied when one is written (Origin); checking
// one through (Verifier, Reporter); reading a damaged one (Salvager).

// Origin is where the disks and configs of an archive being written come
// from (CreateOptions.From). Setting it asks a format whose archives
// follow rules of the tools that restore them (VMA: Proxmox's restore) to
// apply those rules, saying what it did to CreateOptions.Note: to complete
// the configs they need, to refuse what they would refuse, to note what
// they would not take, and, for a Dest.Path that is a directory, to name
// the archive in it as those tools name their archives, after the input.
// Without it, Create writes what it is given. An empty Origin stands for
// disks from plain images.
type Origin struct {
	// Path is the input's path, "-" for standard input.
	Path string
	// Archive is set when the input holds several disks and configs.
	Archive bool
	// Compression is the compression layer around the input ("zstd",
	// "gzip", "lzop"), or "".
	Compression string
	// CTime is when the input was made (Created), or zero.
	CTime time.Time
	// OwnConfigs says CreateOptions.Configs are the input's own, not
	// configs given in their place: a rule they break is the input's, and
	// what they say of disks the output leaves out may be dropped.
	OwnConfigs bool
	// Whole says the output holds every disk of the input archive under
	// its own name, with its own configs: a repack that can come back
	// byte for byte, whose configs the format keeps as they are where its
	// rules allow.
	Whole bool
}

// Verifier is implemented by streams that can check their whole input,
// reading every byte of it, and report what it holds and what the tools
// that restore the format's archives would make of it.
type Verifier interface {
	// Verify reads the rest of the input, once. A damaged input fails
	// after what came before it was counted: the Report says how far
	// Verify got, and its Disks are set only on success.
	Verify(ctx context.Context, o VerifyOptions) (*Report, error)
}

// VerifyOptions tune Verifier.Verify.
type VerifyOptions struct {
	// Path is the input's path ("-" for standard input), for the rules
	// of the format's tools on file names.
	Path string
	// Digest computes the sha256 of every disk's content.
	Digest bool
	// Progress, if set, is called as the input is read, with the bytes of
	// it read so far.
	Progress func(n int64)
}

// Report is what an archive stores, as verifying or reading it found.
type Report struct {
	// Disks are the disks, in order.
	Disks []DiskReport
	// Records is the number of the format's records read (a VMA
	// archive's extents); Bytes the bytes of the input read.
	Records int64
	Bytes   int64
	// Restorer names the tool that restores the format's archives
	// ("Proxmox"); Unrestorable says why it would refuse this one, or
	// restore it wrong, with its defaults; empty if it would restore it.
	Restorer     string
	Unrestorable []string
	// NameClashes are the configs and disks that extract or mount would
	// give one file name (see NameClashes).
	NameClashes []string
}

// DiskReport is what an archive stores of one disk.
type DiskReport struct {
	ID     int    // the disk's number in the archive
	Name   string // its name
	Size   int64  // its virtual size, in bytes
	Stored int64  // bytes of it the archive stores
	Zero   int64  // bytes of it the archive marks as zero
	SHA256 []byte // of its content, if asked for (VerifyOptions.Digest)
}

// Reporter is implemented by archive streams, once read (Stream.Read),
// and by archive images, from their index: what they store of each disk
// (Report's Disks, Records and Bytes).
type Reporter interface {
	Report() *Report
}

// Located is implemented by errors that know where in their input they
// were found: a damaged archive's byte offset, disk and cluster.
type Located interface {
	error
	Location() Location
}

// Location is a place in an input.
type Location struct {
	Offset  int64  // byte offset in the input, or -1
	Disk    string // the disk concerned, or ""
	Cluster int64  // the cluster of that disk, or -1
}

// Salvager is implemented by streams that can read a damaged input
// through: damaged ranges are skipped, reading goes on from the next
// intact record, and what is lost is left unwritten (zeros in a new file).
type Salvager interface {
	// Salvage switches Read to salvaging; call it before Read.
	Salvage()
	// Salvaged says what Read skipped and lost; call it after Read.
	Salvaged() SalvageReport
}

// SalvageReport is what a salvaging read skipped, lost, and delivered in
// doubt, in lines for the user.
type SalvageReport struct {
	// Damaged describes the ranges of the input skipped ("bytes 100-199
	// (100 bytes) skipped: …"); DamagedRanges counts them, listed or not.
	Damaged       []string
	DamagedRanges int64
	// Doubtful describes data delivered that may be wrong.
	Doubtful []string
	// Lost describes, per disk, what was lost and left as zeros.
	Lost []string
}
