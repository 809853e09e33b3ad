package nbd

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// FuzzServer: whatever a client sends, the server answers or hangs up: it
// never panics, and it ends the session once the client is gone.
//
//	go test -run '^$' -fuzz FuzzServer ./nbd/
func FuzzServer(f *testing.F) {
	opt := func(o uint32, data []byte) []byte {
		b := binary.BigEndian.AppendUint64(nil, optMagic)
		b = binary.BigEndian.AppendUint32(b, o)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	req := func(typ, flags uint16, off uint64, n uint32) []byte {
		b := binary.BigEndian.AppendUint32(nil, requestMagic)
		b = binary.BigEndian.AppendUint16(b, flags)
		b = binary.BigEndian.AppendUint16(b, typ)
		b = binary.BigEndian.AppendUint64(b, 7)
		b = binary.BigEndian.AppendUint64(b, off)
		return binary.BigEndian.AppendUint32(b, n)
	}
	flags := binary.BigEndian.AppendUint32(nil, flagFixedNewstyle|flagNoZeroes)
	var seed []byte
	seed = append(seed, flags...)
	seed = append(seed, opt(optStructured, nil)...)
	seed = append(seed, opt(optSetMeta, metaData("drive-scsi0", baseAllocation))...)
	seed = append(seed, opt(optGo, nameData("drive-scsi0", infoBlockSize))...)
	seed = append(seed, req(cmdRead, 0, 0, 8192)...)
	seed = append(seed, req(cmdBlockStatus, 0, 0, 1<<20)...)
	seed = append(seed, req(cmdRead, cmdFlagDF, 4000, 100)...)
	seed = append(seed, req(cmdDisc, 0, 0, 0)...)
	f.Add(seed)
	f.Add(append(append(append([]byte(nil), flags...), opt(optList, nil)...), opt(optExportName, []byte("plain"))...))
	f.Add(append(append([]byte(nil), flags...), opt(optInfo, nameData("x"))...))
	b := testDisk()
	s := newServer(b)
	f.Fuzz(func(t *testing.T, in []byte) {
		a, c := net.Pipe()
		done := make(chan struct{})
		go func() {
			s.ServeConn(context.Background(), c)
			close(done)
		}()
		a.SetDeadline(time.Now().Add(5 * time.Second))
		go io.Copy(io.Discard, a)
		a.Write(in)
		a.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("session did not end after the client left")
		}
	})
}
