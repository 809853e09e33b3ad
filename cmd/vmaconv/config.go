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
	h := header(in)
	cf, ok := h.Config(c.Name)
	if !ok {
		var names []string
		for _, x := range h.Configs {
			names = append(names, fmt.Sprintf("%q", x.Name))
		}
		have := "it has none"
		if len(names) > 0 {
			have = "it has " + strings.Join(names, ", ")
		}
		return fmt.Errorf("%s: no config %q in the archive (%s)", c.name(), c.Name, have)
	}
	_, err = e.stdout.Write(cf.Data)
	return err
}
