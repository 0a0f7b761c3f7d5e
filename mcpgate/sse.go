package mcpgate

import (
	"bufio"
	"errors"
	"io"
	"strings"
)

// event is one server-sent event as the upstream framed it. The gateway
// reads events only to see the JSON-RPC messages they carry (to filter a
// list answer, to learn a call's outcome); it writes them on with their
// id, name and retry unchanged, so Last-Event-ID resumption still works
// against the upstream.
type event struct {
	ID, Name, Retry string
	Data            string
	hasID           bool
}

var errEventTooLarge = errors.New("server-sent event too large")

// readEvent reads the next event; comments are skipped. io.EOF at the
// end of the stream.
func readEvent(br *bufio.Reader, limit int) (event, error) {
	var e event
	var data strings.Builder
	size, lines := 0, 0
	for {
		line, err := br.ReadString('\n')
		size += len(line)
		if size > limit {
			return e, errEventTooLarge
		}
		if err != nil {
			if err == io.EOF && lines > 0 && line == "" {
				break // the last event lacked its blank line
			}
			if err == io.EOF && line != "" {
				err = io.ErrUnexpectedEOF
			}
			return e, err
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" {
			if lines == 0 {
				continue
			}
			break
		}
		lines++
		if line[0] == ':' {
			lines-- // a comment
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "data":
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(value)
		case "id":
			e.ID, e.hasID = value, true
		case "event":
			e.Name = value
		case "retry":
			e.Retry = value
		}
	}
	e.Data = data.String()
	return e, nil
}

// writeEvent writes e in the text/event-stream framing.
func writeEvent(w io.Writer, e event) error {
	var b strings.Builder
	if e.Name != "" {
		b.WriteString("event: " + oneLine(e.Name) + "\n")
	}
	if e.hasID {
		b.WriteString("id: " + oneLine(e.ID) + "\n")
	}
	if e.Retry != "" {
		b.WriteString("retry: " + oneLine(e.Retry) + "\n")
	}
	for _, l := range strings.Split(e.Data, "\n") {
		b.WriteString("data: " + l + "\n")
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func oneLine(s string) string { return strings.NewReplacer("\r", "", "\n", "").Replace(s) }
