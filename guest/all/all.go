// Package all registers every file system reader of vmaconv with package
// guest: import it for its side effect.
package all

import (
	// The readers, probed in this order.
	_ "github.com/vmaconv/vmaconv/guest/ext4"
	_ "github.com/vmaconv/vmaconv/guest/fat"
	_ "github.com/vmaconv/vmaconv/guest/iso9660"
	_ "github.com/vmaconv/vmaconv/guest/ntfs"
	_ "github.com/vmaconv/vmaconv/guest/xfs"
)
