package vma

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/vmaconv/vmaconv/format"
)

var zeroCluster [ClusterSize]byte

// sequencer feeds a device's clusters, which may arrive in any order, to a
// writer (a hash, a pipe) in device order, holding back at most max bytes
// (shared by all devices through held) of early clusters.
//
// With dw set instead of w (lenient), clusters go to a disk writer at
// their offsets, still in ascending order where the bound allows: when it
// is exceeded, the clusters held are written (ascending) rather than
// failing, and later ones below them are written as they come. Either
// way each cluster is written exactly once and the order depends only on
// the input, so the output is deterministic.
type sequencer struct {
	w       io.Writer
	dw      format.DiskWriter
	dev     Device
	size    int64
	next    int64 // next cluster to hash
	pending map[int64]heldCluster
	held    *int64
	max     int64
	buf     []byte // scratch cluster
}

type heldCluster struct {
	mask uint16
	data []byte
}

// heldCost is what a held cluster counts against the bound: its data plus
// bookkeeping, so that many held zero clusters are bounded too.
func heldCost(c heldCluster) int64 { return int64(len(c.data)) + 64 }

func (s *sequencer) put(c *Cluster) error {
	if c.Index*ClusterSize >= s.size {
		return nil // vmstate data past its size: not part of the content
	}
	if s.dw != nil && c.Index < s.next { // lenient: behind what was flushed
		return s.writeAt(c.Index, c.Mask, c.Data)
	}
	if c.Index != s.next {
		if s.pending == nil {
			s.pending = map[int64]heldCluster{}
		}
		hc := heldCluster{c.Mask, bytes.Clone(c.Data)}
		*s.held += heldCost(hc)
		s.pending[c.Index] = hc
		if *s.held > s.max {
			if s.dw != nil {
				return s.flush()
			}
			return fmt.Errorf("%w: more than %d MiB held back at cluster %d (expected %d next)", format.ErrReorder, s.max>>20, c.Index, s.next)
		}
		return nil
	}
	if err := s.write(c.Mask, c.Data); err != nil {
		return err
	}
	for {
		hc, ok := s.pending[s.next]
		if !ok {
			return nil
		}
		delete(s.pending, s.next)
		*s.held -= heldCost(hc)
		if err := s.write(hc.mask, hc.data); err != nil {
			return err
		}
	}
}

// flush writes every held cluster, ascending (lenient mode).
func (s *sequencer) flush() error {
	idx := slices.Sorted(maps.Keys(s.pending))
	for _, c := range idx {
		hc := s.pending[c]
		delete(s.pending, c)
		*s.held -= heldCost(hc)
		if err := s.writeAt(c, hc.mask, hc.data); err != nil {
			return err
		}
	}
	if len(idx) > 0 {
		s.next = idx[len(idx)-1] + 1
	}
	return nil
}

// writeAt writes cluster c at its offset of s.dw: stored blocks as data,
// the rest as zero ranges.
func (s *sequencer) writeAt(c int64, mask uint16, data []byte) error {
	valid := min(s.size-c*ClusterSize, ClusterSize)
	off := c * ClusterSize
	if valid <= 0 {
		return nil
	}
	if mask == 0 {
		return s.dw.ZeroAt(off, valid)
	}
	if s.buf == nil {
		s.buf = make([]byte, ClusterSize)
	}
	cl := Cluster{Mask: mask, Data: data}
	cl.Expand(s.buf)
	_, err := s.dw.WriteAt(s.buf[:valid], off)
	return err
}

// write writes cluster s.next from its stored blocks.
func (s *sequencer) write(mask uint16, data []byte) error {
	if s.dw != nil {
		s.next++
		return s.writeAt(s.next-1, mask, data)
	}
	valid := min(s.size-s.next*ClusterSize, ClusterSize)
	s.next++
	if valid <= 0 {
		return nil
	}
	if mask == 0 {
		_, err := s.w.Write(zeroCluster[:valid])
		return err
	}
	if s.buf == nil {
		s.buf = make([]byte, ClusterSize)
	}
	c := Cluster{Mask: mask, Data: data}
	c.Expand(s.buf)
	_, err := s.w.Write(s.buf[:valid])
	return err
}

// finish writes zeros for any tail not stored (a vmstate stream shorter
// than its size) and checks nothing is left pending. In lenient mode it
// writes what is held and nothing more: clusters never stored (lost to
// salvage) stay unwritten.
func (s *sequencer) finish() error {
	if s.dw != nil {
		return s.flush()
	}
	if len(s.pending) > 0 {
		return fmt.Errorf("%d clusters held back were never reached", len(s.pending))
	}
	if err := CheckVMStateTail(s.dev, s.next*ClusterSize); err != nil {
		return err
	}
	for s.next*ClusterSize < s.size {
		if err := s.write(0, nil); err != nil {
			return err
		}
	}
	return nil
}
