package guest

import (
	"github.com/vmaconv/vmaconv/input"
)

// OpenInput returns the tree of an input's disks, which must be read at
// random (input.Options.RandomAccess): an archive's disks by their names,
// but for those its format does not show as disks (a RAM-state stream);
// an image's one disk as the root. The tree reads the input's sources: it
// is valid until the input is closed.
func OpenInput(in *input.Input) (*Tree, error) {
	var shown func(name string) bool
	if rules := in.Format().Archive; rules != nil {
		shown = func(name string) bool { return rules.MountFile(name) != "" }
	}
	exported, err := in.Exported(nil, "", shown)
	if err != nil {
		return nil, err
	}
	disks := make([]Disk, len(exported))
	for i, d := range exported {
		disks[i] = Disk{Name: d.Name, R: d.Source, Size: d.Source.Size()}
		if !in.Archive() {
			disks[i].Name = ""
		}
	}
	return New(disks), nil
}
