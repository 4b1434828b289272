package main

import (
	"bytes"
	"mime/multipart"
)

// multipartBody writes a multipart/form-data body as the agents do.
type multipartBody struct{ w *multipart.Writer }

func newMultipart(buf *bytes.Buffer) *multipartBody {
	return &multipartBody{w: multipart.NewWriter(buf)}
}

func (m *multipartBody) part(name, filename string, data []byte) {
	fw, err := m.w.CreateFormFile(name, filename)
	if err != nil {
		fatal("multipart: %v", err)
	}
	if _, err := fw.Write(data); err != nil {
		fatal("multipart: %v", err)
	}
}

// close ends the body and returns its Content-Type.
func (m *multipartBody) close() string {
	if err := m.w.Close(); err != nil {
		fatal("multipart: %v", err)
	}
	return m.w.FormDataContentType()
}
