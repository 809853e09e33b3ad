// Package vma reads and writes Proxmox VMA v1 backup archives ("Virtual
// Machine Archive"), the format written by Proxmox VE's vzdump for QEMU
// virtual machines.
//
// An archive is a header holding the VM's configuration files as blobs and a
// table of up to 254 devices, followed by extents. Each extent carries up to
// 59 clusters of 64 KiB; within a cluster only the 4 KiB blocks that are not
// all zero are stored. The byte-level layout is described in
// docs/vma-format.md at the root of this module.
//
// [NewReader] parses an archive sequentially from any [io.Reader] (a pipe or
// stdin works; it never seeks) and checks everything Proxmox's own reader
// checks, plus completeness: every cluster of every disk must be present.
// [NewWriter] writes archives that Proxmox's `vma verify` and `vma extract`
// accept, byte for byte the way Proxmox's writer lays them out.
//
// [Unpack] restores the devices of an archive read sequentially into
// io.WriterAt targets (a sink's disks, in parallel), hashes them, or only
// checks them (vmaconv verify); [Repack] writes an archive into another in
// its own order. Through [Format] an archive is a format.Image read at
// random ([Open]'s index) or a format.Stream ([OpenStream]), which verifies
// (format.Verifier), reports (format.Reporter) and salvages
// (format.Salvager) itself. [Create], told where the disks come from
// (format.CreateOptions.From), applies Proxmox's rules for what its restore
// takes: the qemu-server.conf and its map lines, names extract and mount
// can use (format.ArchiveRules), and vzdump's names of backups.
//
// Errors found in an archive are returned as [*FormatError], which names the
// byte offset, device and cluster and wraps one of the sentinels
// [ErrCorrupt], [ErrChecksum], [ErrUnsupported] or [ErrIncomplete].
package vma
