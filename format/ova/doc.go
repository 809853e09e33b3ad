// Package ova reads and writes OVF packages: an OVA (one tar file) or a
// bare .ovf descriptor with its files beside it, the way VMware's
// ovftool, open-vmdk's ova-compose, ESXi and Proxmox VE exchange
// virtual machines. It is an archive format (format.Format.Multi): its
// disks are an archive's devices, named after the Proxmox disk keys
// their controllers give them (drive-scsi0, drive-sata1, …), and its one
// config is a qemu-server.conf made from the descriptor's hardware.
//
// References: DMTF DSP0243 (Open Virtualization Format 1.x and 2.x) and
// the CIM classes its items use (CIM_ResourceAllocationSettingData's
// ResourceType, CIM_OperatingSystem's OsType); VMware's OVF extensions
// (vmw:Config firmware and bootOptions.efiSecureBootEnabled,
// vmw:CoresPerSocket, vmw:osType, VirtualSystemType vmx-NN) as ovftool
// writes them; open-vmdk's ova-compose (github.com/vmware/open-vmdk) for
// the layout; Proxmox's own imports (pve-storage
// src/PVE/GuestImport/OVF.pm and src/PVE/Storage/ESXiPlugin.pm) for what
// Proxmox makes of OVF hardware; format/vmdk for the disks (QEMU's
// block/vmdk.c).
//
// # Writing
//
// Create writes an archive's disks and its qemu-server.conf as an OVA:
// a ustar archive (GNU's base-256 size field for a member over 8 GiB, as
// GNU tar writes one) of the descriptor, the manifest (SHA256 of every
// other file) and a streamOptimized VMDK per disk, in that order, as
// ovftool and ova-compose lay an OVA out. The descriptor (OVF 1.0, see
// Hardware.OVF) describes the config's VM: name, sockets × cores, memory,
// UEFI firmware for bios: ovmf or an EFI disk (secure boot with
// pre-enrolled keys), guest type from ostype, each disk on its controller
// (IDE, SATA/AHCI, SCSI of the model scsihw gives, VirtIO block disks on
// a VMware Paravirtual SCSI controller), CD-ROM drives, NICs as the
// nearest VMware model (virtio: VmxNet3), each on the network its bridge
// names. What VMware gets otherwise than Proxmox had it is told to
// CreateOptions.Note; a vmstate stream, the EFI disk's variables and a
// TPM state are left out, and so are Proxmox's other files.
//
// An OVA is written to a file, never to a stream: the disks go straight
// into their places in the archive, each member's tar header completed
// with its size once the VMDK is written, and the descriptor and
// manifest, whose room is reserved in front (the descriptor padded with
// trailing white space), at Commit. A disk whose data comes before its
// turn (an archive read as a stream interleaves its disks) is written as
// a VMDK into a temporary file beside the output and copied into place
// when its turn comes: only compressed data is ever staged.
//
// # Reading
//
// An OVA is read at random (Open, OpenAt): its tar headers are listed
// (at most 4096 members, each within the file), its descriptor is the
// first member named *.ovf (at most MaxOVFSize), its manifest the .mf of
// the descriptor's name (SHA1, SHA256 or SHA512), whose digest of the
// descriptor is checked at once and of each disk by its source's
// format.Checker (convert and extract check before writing anything).
// File references must name regular members the archive holds once, in
// the descriptor's directory: names are cleaned, and absolute ones, ".."
// and links are refused; nothing outside the archive is read. A bare
// .ovf reads its files from its own directory; one that leaves it (an
// absolute path, "..", a symbolic link out) only with
// OpenOptions.AllowBacking, each told to OpenOptions.Note. Disks are
// VMDKs (format/vmdk); a disk the descriptor gives no file is zeros of
// its capacity, and one whose capacity is larger than its file's reads
// zeros past it, as VMware grows it. encoding/xml expands no external
// or custom entities, so a descriptor cannot reach files or grow.
//
// A sink's disk writers are format.Sequential and may be called from
// different goroutines (one mutex serialises them); an image's disks are
// format.Sources, safe for parallel reads.
package ova
