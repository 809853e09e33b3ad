// Command gendisk writes deterministic test disks for bench/compare.sh.
//
//	gendisk -size 1G -out disk.raw          # half the 4 KiB blocks zero, rest random
//	gendisk -size 20G -sparse 4M -out s.raw # a sparse file holding 4 MiB of data
//
// The same flags always give the same bytes. Zero blocks are written out
// (not holes), as in a used VM disk image; -sparse makes a file of holes
// with the data spread over it.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
)

func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n * mult, err
}

func main() {
	sizeFlag := flag.String("size", "1G", "disk size (K, M, G suffixes)")
	sparseFlag := flag.String("sparse", "", "write a sparse file holding this much data instead")
	zeroPct := flag.Int("zero", 50, "percentage of 4 KiB blocks that are zero")
	out := flag.String("out", "disk.raw", "output file")
	seed := flag.Uint64("seed", 1, "random seed")
	flag.Parse()
	if err := run(*sizeFlag, *sparseFlag, *zeroPct, *out, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "gendisk:", err)
		os.Exit(1)
	}
}

func run(sizeFlag, sparseFlag string, zeroPct int, out string, seed uint64) error {
	size, err := parseSize(sizeFlag)
	if err != nil || size <= 0 || size%4096 != 0 {
		return fmt.Errorf("bad -size %q (a positive multiple of 4 KiB)", sizeFlag)
	}
	rng := rand.New(rand.NewPCG(seed, uint64(size)))
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	block := make([]byte, 4096)
	fill := func() {
		for i := 0; i < len(block); i += 8 {
			v := rng.Uint64() | 1
			for k := range 8 {
				block[i+k] = byte(v >> (8 * k))
			}
		}
	}
	if sparseFlag != "" {
		data, err := parseSize(sparseFlag)
		if err != nil || data <= 0 || data > size {
			return fmt.Errorf("bad -sparse %q", sparseFlag)
		}
		if err := f.Truncate(size); err != nil {
			return err
		}
		// Data in 1 MiB pieces spread evenly, the last one at the end.
		const piece = 1 << 20
		n := max(data/piece, 1)
		for i := int64(0); i < n; i++ {
			off := (size - piece) / max(n-1, 1) * i / 4096 * 4096
			for j := int64(0); j < piece; j += 4096 {
				fill()
				if _, err := f.WriteAt(block, off+j); err != nil {
					return err
				}
			}
		}
		return f.Close()
	}
	w := bufio.NewWriterSize(f, 1<<20)
	zero := make([]byte, 4096)
	for off := int64(0); off < size; off += 4096 {
		if rng.IntN(100) < zeroPct {
			w.Write(zero)
		} else {
			fill()
			w.Write(block)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}
