package vma

import "time"

// Created implements format.Created: the archive's creation time.
func (s *stream) Created() time.Time { return s.r.Header().CTime }

// Created implements format.Created: the archive's creation time.
func (i *image) Created() time.Time { return i.a.hdr.CTime }
