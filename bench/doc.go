// Package bench holds vmaconv's benchmarks: zero detection, extent packing
// (vma.Writer) and parsing (vma.Reader plus vma.Unpack), on
// deterministic generated data. Run them with
//
//	go test -run '^$' -bench . -benchmem ./bench/
//
// and compare runs with benchstat.
package bench
