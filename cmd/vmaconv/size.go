package main

import (
	"strings"

	"github.com/vmaconv/vmaconv/format"
)

// byteSize is a size flag that takes qemu-img's suffixes (64K, 2M, 1.5G).
type byteSize int64

// UnmarshalText parses the flag's value (kong calls it).
func (b *byteSize) UnmarshalText(text []byte) error {
	n, err := format.ParseSize(string(text))
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}

// mibSize is a size flag whose bare numbers count MiB (--zstd-memory 256,
// as the flag always took them) and which also takes qemu-img's suffixes
// (512M, 1G). It holds bytes.
type mibSize int64

// UnmarshalText parses the flag's value (kong calls it).
func (m *mibSize) UnmarshalText(text []byte) error {
	s := string(text)
	if s != "" && !strings.ContainsAny(s[len(s)-1:], "bBkKmMgGtTpPeE") {
		s += "M"
	}
	n, err := format.ParseSize(s)
	if err != nil {
		if _, err2 := format.ParseSize(string(text)); err2 != nil {
			return err2 // says what was given
		}
		return err
	}
	*m = mibSize(n)
	return nil
}
