package format

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ParseSize reads a size as qemu-img takes one: a decimal number of bytes,
// optionally with a fraction and a suffix B, K, M, G, T, P or E (either
// case; powers of 1024): "65536", "64K", "2M", "1.5G". A fraction is
// rounded down to whole bytes and is refused without a suffix or with B.
func ParseSize(s string) (int64, error) {
	num, mult := s, float64(1)
	if n := len(s); n > 0 {
		if i := strings.IndexByte("bkmgtpe", lower(s[n-1])); i >= 0 {
			num, mult = s[:n-1], math.Pow(1024, float64(i))
		}
	}
	bad := fmt.Errorf("size %q: want a number of bytes, optionally with a suffix K, M, G, T, P or E (powers of 1024)", s)
	if num == "" || strings.ContainsAny(num, "+-eExXpP_") || strings.TrimSpace(num) != num {
		return 0, bad
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseUint(num, 10, 63)
		if err != nil {
			return 0, bad
		}
		if n > math.MaxInt64/uint64(mult) {
			return 0, fmt.Errorf("size %q: too large", s)
		}
		return int64(n) * int64(mult), nil
	}
	if mult == 1 {
		return 0, fmt.Errorf("size %q: a fraction needs a suffix (K, M, G, T, P or E)", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 {
		return 0, bad
	}
	v := f * mult
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return int64(v), nil
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
