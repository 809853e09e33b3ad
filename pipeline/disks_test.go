package pipeline_test

import (
	"bytes"
	"errors"
	"sync/atomic"
)

// memDisk is an io.WriterAt over a byte slice that counts writes.
type memDisk struct {
	b      []byte
	writes atomic.Int64
}

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, errors.New("write outside the disk")
	}
	m.writes.Add(1)
	return copy(m.b[off:], p), nil
}

// zeroDisk is a memDisk that is a format.DiskWriter: ZeroAt writes zeros
// (it starts out holding 0xee everywhere), and it counts the bytes each
// method was given, to check every byte is delivered exactly once.
type zeroDisk struct {
	memDisk
	data, zeros atomic.Int64
}

func newZeroDisk(n int64) *zeroDisk {
	return &zeroDisk{memDisk: memDisk{b: bytes.Repeat([]byte{0xee}, int(n))}}
}

func (z *zeroDisk) WriteAt(p []byte, off int64) (int, error) {
	z.data.Add(int64(len(p)))
	return z.memDisk.WriteAt(p, off)
}

func (z *zeroDisk) ZeroAt(off, n int64) error {
	z.zeros.Add(n)
	_, err := z.memDisk.WriteAt(make([]byte, n), off)
	return err
}
