package outboxcli

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// escapeControls returns s safe to print on a terminal. What a dead letter
// carries (header values, broker errors, payloads, even the destination) comes
// from applications and brokers, so control characters (C0, DEL, C1), the
// characters that reorder or break lines (bidi overrides, U+2028) and other
// non-graphic ones, and invalid UTF-8 are written as Go-style escapes: \r, \n,
// \t, \x1b, \u202e. A value can then neither move the cursor, recolour, retitle
// or clear the terminal, nor overwrite (CR) or fake (LF) a line of the output.
// With keepNewlines, \n stays a line break (multi-line payload previews, whose
// lines the caller indents). Backslashes are not escaped: the text is for
// reading; --json has the exact values.
func escapeControls(s string, keepNewlines bool) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return needsEscape(r, keepNewlines) }) && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case !needsEscape(r, keepNewlines):
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
		i += size
	}
	return b.String()
}

func needsEscape(r rune, keepNewlines bool) bool {
	if r == '\n' {
		return !keepNewlines
	}
	return !unicode.IsGraphic(r) || r == utf8.RuneError
}
