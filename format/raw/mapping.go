package raw

import (
	"fmt"

	"github.com/vmaconv/vmaconv/format"
)

// Mapping implements format.Mapper as qemu's file driver answers: every
// range is present at its own offset; holes of the file read as zeros,
// the rest is data. It asks the file system every time (Region may stop
// asking on a slow one; a map must not).
func (s *Source) Mapping(start, length int64) (format.Mapping, error) {
	length = min(length, s.size-start)
	if length <= 0 || start < 0 {
		return format.Mapping{}, fmt.Errorf("raw: mapping at %d beyond the end (%d)", start, s.size)
	}
	n, zero, err := holeAt(s.f, start, s.size)
	if err != nil {
		return format.Mapping{}, fmt.Errorf("raw: %s: %w", s.f.Name(), err)
	}
	if n <= 0 {
		n, zero = length, false
	}
	return format.Mapping{Start: start, Length: min(n, length), Present: true, Zero: zero, Data: !zero, Offset: start}, nil
}
