package vma

import (
	"bytes"
	"io"
	"testing"

	"github.com/google/uuid"
)

// TestSalvageCandidateFlood: input crafted so that every 8 bytes start a
// candidate extent header (magic, zero reserved field and block count, the
// archive's UUID) is rejected by the cheap checks, without computing an
// MD5 for each candidate, and salvage still ends cleanly.
func TestSalvageCandidateFlood(t *testing.T) {
	pattern := []byte("VMAE\x00\x00\x00\x00")
	var id uuid.UUID
	copy(id[:], bytes.Repeat(pattern, 2))
	var out bytes.Buffer
	w := NewWriter(&out, WithUUID(id))
	dev, err := w.AddDevice("drive-scsi0", 70*ClusterSize)
	if err != nil {
		t.Fatal(err)
	}
	for c := range int64(70) {
		w.WriteCluster(dev, c, bytes.Repeat([]byte{1}, ClusterSize))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	hs := 12800
	flood := bytes.Repeat(pattern, 512<<10) // 4 MiB of candidates
	raw := append(append(bytes.Clone(out.Bytes()[:hs]), flood...), out.Bytes()[hs:]...)
	rd, err := NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	rd.Salvage()
	md5Checks = 0
	n := 0
	for {
		_, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 70 {
		t.Errorf("%d clusters read past the flood, want 70", n)
	}
	if md5Checks > 16 {
		t.Errorf("%d MD5s computed for %d candidates", md5Checks, len(flood)/8)
	}
	if d := rd.Damaged(); len(d) != 1 || d[0].Offset != int64(hs) || d[0].Length != int64(len(flood)) {
		t.Errorf("damage %+v, want bytes %d-%d", d, hs, hs+len(flood)-1)
	}
}

// TestSalvageManyResyncs: input of many small valid extents, each followed
// by a junk byte, makes salvage resynchronise after every extent. Each
// resync must cost about what it scans: the bytes pushed back to be read
// again stay within a small multiple of the input (with 256 KiB scan reads
// and a 1 MiB buffer allocated per resync they were hundreds of times it,
// and such a 50 MB input took 12 s).
func TestSalvageManyResyncs(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out)
	const n = 5000
	id, err := w.AddDevice("drive-scsi0", n*SlotsPerExtent*ClusterSize)
	if err != nil {
		t.Fatal(err)
	}
	for c := range int64(n * SlotsPerExtent) {
		w.WriteCluster(id, c, nil) // zero clusters: extents are headers alone
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	hs := out.Len() - n*ExtentHeaderSize
	raw := bytes.Clone(out.Bytes()[:hs])
	for i := range n {
		raw = append(raw, out.Bytes()[hs+i*ExtentHeaderSize:hs+(i+1)*ExtentHeaderSize]...)
		raw = append(raw, 'x')
	}
	rd, err := NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	rd.Salvage()
	pushedBack = 0
	for {
		_, err := rd.NextExtent()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if m := rd.MissingClusters(); len(m) != 0 {
		t.Errorf("%+v missing, want every extent read", m)
	}
	if d := rd.Damaged(); len(d) != min(n, maxDamage) || d[0].Length != 1 {
		t.Errorf("%d damaged ranges (first %+v), want %d of one byte", len(d), d[0], min(n, maxDamage))
	}
	if pushedBack > 8*len(raw) {
		t.Errorf("%d bytes pushed back for a %d-byte input", pushedBack, len(raw))
	}
}
