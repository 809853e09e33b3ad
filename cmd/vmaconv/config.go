package main

import (
	"fmt"
	"strings"
)

type configCmd struct {
	archiveArg
	Name string `arg:"" optional:"" default:"qemu-server.conf" help:"Config to print (default qemu-server.conf)."`
}

func (c *configCmd) Run(e *env) error {
	in, err := c.open(e)
	if err != nil {
		return err
	}
	defer in.Close()
	var names []string
	for _, cf := range in.Configs() {
		if cf.Name == c.Name {
			_, err = e.stdout.Write(cf.Data)
			return err
		}
		names = append(names, fmt.Sprintf("%q", cf.Name))
	}
	have := "it has none"
	if len(names) > 0 {
		have = "it has " + strings.Join(names, ", ")
	}
	return fmt.Errorf("%s: no config %q in the archive (%s)", c.name(), c.Name, have)
}
