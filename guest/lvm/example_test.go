package lvm_test

import (
	"fmt"
	"log"
	"os"

	"github.com/vmaconv/vmaconv/guest/lvm"
)

// Example reads the physical volumes of two disk images, assembles their
// volume groups and reads the first sector of each visible logical volume.
func Example() {
	var pvs []*lvm.PV
	for _, name := range []string{"disk1.img", "disk2.img"} {
		f, err := os.Open(name)
		if err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			log.Fatal(err)
		}
		if !lvm.Probe(f, st.Size()) {
			continue
		}
		pv, err := lvm.ReadPV(f, st.Size())
		if err != nil {
			log.Fatal(err)
		}
		pvs = append(pvs, pv)
	}
	for _, vg := range lvm.Group(pvs) {
		for _, pv := range vg.Missing {
			fmt.Printf("%s: pv %s missing\n", vg.Metadata.Name, pv.ID)
		}
		for _, lv := range vg.Metadata.LVs {
			if !lv.Visible {
				continue
			}
			if !lv.Readable {
				fmt.Printf("%s/%s: %s, not read\n", vg.Metadata.Name, lv.Name, lv.Why)
				continue
			}
			v, err := vg.Open(lv.Name)
			if err != nil {
				log.Fatal(err)
			}
			sector := make([]byte, 512)
			if _, err := v.ReadAt(sector, 0); err != nil {
				log.Fatal(err)
			}
			fmt.Printf("%s/%s: %d bytes, %s\n", vg.Metadata.Name, lv.Name, v.Size(), lv.Type)
		}
	}
}
