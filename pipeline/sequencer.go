package pipeline

import (
	"bytes"
	"fmt"
	"io"

	"github.com/vmaconv/vmaconv/format/vma"
)

var zeroCluster [vma.ClusterSize]byte

// sequencer feeds a device's clusters, which may arrive in any order, to a
// writer (a hash, a pipe) in device order, holding back at most max bytes
// (shared by all devices through held) of early clusters.
type sequencer struct {
	w       io.Writer
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

func (s *sequencer) put(c *vma.Cluster) error {
	if c.Index != s.next {
		if c.Index*vma.ClusterSize >= s.size {
			return nil // vmstate data past its size: not part of the content
		}
		if s.pending == nil {
			s.pending = map[int64]heldCluster{}
		}
		hc := heldCluster{c.Mask, bytes.Clone(c.Data)}
		*s.held += heldCost(hc)
		if *s.held > s.max {
			return fmt.Errorf("%w: more than %d MiB held back at cluster %d (expected %d next)", ErrReorder, s.max>>20, c.Index, s.next)
		}
		s.pending[c.Index] = hc
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

// write writes cluster s.next from its stored blocks.
func (s *sequencer) write(mask uint16, data []byte) error {
	valid := min(s.size-s.next*vma.ClusterSize, vma.ClusterSize)
	s.next++
	if valid <= 0 {
		return nil
	}
	if mask == 0 {
		_, err := s.w.Write(zeroCluster[:valid])
		return err
	}
	if s.buf == nil {
		s.buf = make([]byte, vma.ClusterSize)
	}
	c := vma.Cluster{Mask: mask, Data: data}
	c.Expand(s.buf)
	_, err := s.w.Write(s.buf[:valid])
	return err
}

// finish writes zeros for any tail not stored (a vmstate stream shorter
// than its size) and checks nothing is left pending.
func (s *sequencer) finish() error {
	if len(s.pending) > 0 {
		return fmt.Errorf("%d clusters held back were never reached", len(s.pending))
	}
	for s.next*vma.ClusterSize < s.size {
		if err := s.write(0, nil); err != nil {
			return err
		}
	}
	return nil
}
