package main

import "github.com/vmaconv/vmaconv/format"

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
