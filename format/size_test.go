package format

import "testing"

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"0", 0}, {"512", 512}, {"65536", 65536}, {"64K", 64 << 10}, {"64k", 64 << 10},
		{"2M", 2 << 20}, {"2m", 2 << 20}, {"1G", 1 << 30}, {"1T", 1 << 40}, {"1P", 1 << 50},
		{"1E", 1 << 60}, {"7E", 7 << 60}, {"512B", 512}, {"512b", 512}, {"1.5K", 1536},
		{"1.5G", 3 << 29}, {"0.5M", 512 << 10}, {"9223372036854775807", 1<<63 - 1},
	} {
		got, err := ParseSize(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "K", "-1", "+1", "1.5", "1.5B", "8E", "1e3", "0x10", "1Q", " 1", "1 ", "1KB", "9223372036854775808", "1..5K", "16E", "99999999999999999999K"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}
