//! What a container may send to the user's terminal. The agent inside is
//! hostile and owns every byte it prints, so its output passes through
//! [`EscapeFilter`] on the way to the host terminal: text, colours, cursor
//! movement, modes and window titles pass; everything that reaches beyond the
//! screen is dropped whole:
//! - OSC other than titles (0, 1, 2) and colour settings (4, 10-19, 104,
//!   110-119, never queries): so no OSC 52 clipboard, OSC 8 hyperlinks, OSC 7,
//!   notifications or file transfers;
//! - DCS (and so DECRQSS, tmux/sixel passthrough), SOS, PM and APC strings;
//! - report requests whose answer the terminal would type back (device status
//!   and attributes, window reports, mode and setting requests, ENQ, DECID);
//! - C1 controls (8-bit or UTF-8 encoded), stray and invalid UTF-8 bytes.
//!
//! It is a byte-level state machine: sequences split across reads are held
//! (bounded: [`MAX_CSI`], [`MAX_OSC`]) until complete, and a sequence that
//! is dropped is dropped from its first byte, so the terminal never sees a
//! partial one.

/// Longest control sequence (CSI) held; a longer one is dropped.
pub const MAX_CSI: usize = 64;
/// Longest OSC (title) held; a longer one is dropped.
pub const MAX_OSC: usize = 4096;

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;
const CAN: u8 = 0x18;
const SUB: u8 = 0x1a;
const DEL: u8 = 0x7f;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Text.
    Ground,
    /// After ESC (held in `buf`).
    Esc,
    /// ESC and intermediate bytes.
    EscInter,
    /// ESC [ and parameters.
    Csi,
    /// A CSI being dropped, up to its final byte.
    CsiDrop,
    /// ESC ] and payload.
    Osc,
    /// ESC inside an OSC: ST or the start of something else.
    OscEsc,
    /// A string being dropped up to its terminator (DCS, SOS, PM, APC, long OSC).
    Drop,
    /// ESC inside a dropped string.
    DropEsc,
}

/// A streaming filter for a hostile program's terminal output (see the module).
#[derive(Debug, Clone)]
pub struct EscapeFilter {
    state: State,
    /// The sequence being collected.
    buf: Vec<u8>,
    /// A UTF-8 character being collected, and how long it will be.
    utf8: Vec<u8>,
    utf8_len: usize,
    /// The OSC being collected holds a control character.
    osc_bad: bool,
}

impl Default for EscapeFilter {
    fn default() -> Self {
        Self::new()
    }
}

impl EscapeFilter {
    pub fn new() -> Self {
        EscapeFilter {
            state: State::Ground,
            buf: Vec::with_capacity(MAX_CSI),
            utf8: Vec::with_capacity(4),
            utf8_len: 0,
            osc_bad: false,
        }
    }

    /// Filter `input`, appending what may reach the terminal to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            self.byte(b, out);
        }
    }

    /// Bytes held for a sequence or character not yet complete.
    pub fn held(&self) -> usize {
        self.buf.len() + self.utf8.len()
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        // A byte that ends a state without belonging to it is seen again.
        let mut again = true;
        while again {
            again = false;
            match self.state {
                State::Ground => self.ground(b, out),
                State::Esc | State::EscInter => again = self.esc(b, out),
                State::Csi | State::CsiDrop => again = self.csi(b, out),
                State::Osc | State::OscEsc => again = self.osc(b, out),
                State::Drop | State::DropEsc => again = self.dropping(b),
            }
        }
    }

    fn start_escape(&mut self) {
        self.buf.clear();
        self.buf.push(ESC);
        self.state = State::Esc;
    }

    fn go_ground(&mut self) {
        self.buf.clear();
        self.state = State::Ground;
    }

    fn ground(&mut self, b: u8, out: &mut Vec<u8>) {
        if !self.utf8.is_empty() {
            if (0x80..=0xbf).contains(&b) {
                self.utf8.push(b);
                if self.utf8.len() == self.utf8_len {
                    // Valid UTF-8 (no overlong forms, no surrogates) and no
                    // C1 control (U+0080..U+009F).
                    if let Ok(s) = std::str::from_utf8(&self.utf8)
                        && !s.chars().any(char::is_control)
                    {
                        out.extend_from_slice(&self.utf8);
                    }
                    self.utf8.clear();
                }
                return;
            }
            // Cut short: dropped.
            self.utf8.clear();
        }
        match b {
            ESC => self.start_escape(),
            0x00..=0x1f if allowed_c0(b) => out.push(b),
            0x00..=0x1f => {}
            0x20..=0x7e | DEL => out.push(b),
            0xc2..=0xdf => self.utf8_start(b, 2),
            0xe0..=0xef => self.utf8_start(b, 3),
            0xf0..=0xf4 => self.utf8_start(b, 4),
            // Stray continuation bytes (8-bit C1 among them) and bytes that
            // never start a character.
            _ => {}
        }
    }

    fn utf8_start(&mut self, b: u8, len: usize) {
        self.utf8.push(b);
        self.utf8_len = len;
    }

    /// A C0 control inside a sequence: terminals act on it there, as in text.
    fn control_inside(&mut self, b: u8, out: &mut Vec<u8>) {
        match b {
            CAN | SUB => self.go_ground(),
            ESC => self.start_escape(),
            _ if allowed_c0(b) => out.push(b),
            _ => {}
        }
    }

    fn esc(&mut self, b: u8, out: &mut Vec<u8>) -> bool {
        match b {
            0x00..=0x1f => self.control_inside(b, out),
            DEL => {}
            0x20..=0x2f => {
                self.buf.push(b);
                self.state = State::EscInter;
                if self.buf.len() > 4 {
                    self.go_ground();
                }
            }
            b'[' if self.state == State::Esc => {
                self.buf.push(b);
                self.state = State::Csi;
            }
            b']' if self.state == State::Esc => {
                self.buf.push(b);
                self.osc_bad = false;
                self.state = State::Osc;
            }
            // DCS, SOS, PM, APC: never reach the terminal.
            b'P' | b'X' | b'^' | b'_' if self.state == State::Esc => {
                self.buf.clear();
                self.state = State::Drop;
            }
            // DECID (identify yourself) and a lone ST.
            b'Z' | b'\\' if self.state == State::Esc => self.go_ground(),
            0x30..=0x7e => {
                self.buf.push(b);
                out.extend_from_slice(&self.buf);
                self.go_ground();
            }
            _ => {
                self.go_ground();
                return true;
            }
        }
        false
    }

    fn csi(&mut self, b: u8, out: &mut Vec<u8>) -> bool {
        match b {
            0x00..=0x1f => self.control_inside(b, out),
            DEL => {}
            0x20..=0x3f => {
                if self.state == State::Csi {
                    self.buf.push(b);
                    if self.buf.len() > MAX_CSI {
                        self.buf.clear();
                        self.state = State::CsiDrop;
                    }
                }
            }
            0x40..=0x7e => {
                if self.state == State::Csi {
                    self.buf.push(b);
                    if csi_allowed(&self.buf) {
                        out.extend_from_slice(&self.buf);
                    }
                }
                self.go_ground();
            }
            _ => {
                self.go_ground();
                return true;
            }
        }
        false
    }

    fn osc(&mut self, b: u8, out: &mut Vec<u8>) -> bool {
        if self.state == State::OscEsc {
            if b == b'\\' {
                self.buf.extend_from_slice(&[ESC, b'\\']);
                self.end_osc(out);
                return false;
            }
            // ESC ended the OSC unfinished: dropped; the ESC starts anew.
            self.start_escape();
            return true;
        }
        match b {
            BEL => {
                self.buf.push(b);
                self.end_osc(out);
            }
            ESC => self.state = State::OscEsc,
            CAN | SUB => self.go_ground(),
            0x00..=0x1f | DEL => self.osc_bad = true,
            _ => {
                self.buf.push(b);
                if self.buf.len() > MAX_OSC {
                    self.buf.clear();
                    self.state = State::Drop;
                }
            }
        }
        false
    }

    fn end_osc(&mut self, out: &mut Vec<u8>) {
        if !self.osc_bad && osc_allowed(&self.buf) {
            out.extend_from_slice(&self.buf);
        }
        self.go_ground();
    }

    fn dropping(&mut self, b: u8) -> bool {
        if self.state == State::DropEsc {
            if b == b'\\' {
                self.go_ground();
                return false;
            }
            self.start_escape();
            return true;
        }
        match b {
            BEL | CAN | SUB => self.go_ground(),
            ESC => self.state = State::DropEsc,
            _ => {}
        }
        false
    }
}

/// C0 controls that only move the cursor, ring or pick a character set
/// (not NUL, ENQ, which asks for the answer-back message, and the rest).
fn allowed_c0(b: u8) -> bool {
    matches!(b, 0x07..=0x0f)
}

/// Whether a complete CSI (`ESC [ ... final`) may pass: not a request for
/// a report the terminal would type back, nor printer or window control.
fn csi_allowed(seq: &[u8]) -> bool {
    let Some((&last, body)) = seq.split_last() else {
        return false;
    };
    let body = body.get(2..).unwrap_or_default();
    let private = body.first().copied();
    let has = |c: u8| body.contains(&c);
    match last {
        // Device status and cursor reports, device attributes, terminal
        // parameters, window operations and reports, printer control.
        b'n' | b'c' | b'x' | b't' | b'i' => false,
        // XTVERSION.
        b'q' => private != Some(b'>'),
        // Mode, presentation and terminal state requests, checksums.
        b'p' | b'w' | b'u' | b'y' => !(has(b'$') || has(b'*') || private == Some(b'?')),
        // Graphics attribute and key modifier queries.
        b'S' | b'm' => private != Some(b'?'),
        _ => true,
    }
}

/// Whether a complete OSC (`ESC ] payload terminator`) may pass: a title of
/// printable text, or a colour setting that asks nothing back.
fn osc_allowed(seq: &[u8]) -> bool {
    let payload = seq.get(2..).unwrap_or_default();
    let payload = payload
        .strip_suffix(&[BEL])
        .or_else(|| payload.strip_suffix(&[ESC, b'\\']))
        .unwrap_or(payload);
    let Ok(text) = std::str::from_utf8(payload) else {
        return false;
    };
    if text.chars().any(char::is_control) {
        return false;
    }
    let (number, rest) = text.split_once(';').unwrap_or((text, ""));
    match number {
        "0" | "1" | "2" => true,
        "4" | "10" | "11" | "12" | "13" | "14" | "15" | "16" | "17" | "18" | "19" => {
            !rest.is_empty() && rest.is_ascii() && !rest.contains('?')
        }
        "104" | "110" | "111" | "112" | "113" | "114" | "115" | "116" | "117" | "118" | "119" => {
            rest.is_ascii() && !rest.contains('?')
        }
        _ => false,
    }
}

/// All of `input` through a fresh filter.
pub fn filter_all(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    EscapeFilter::new().push(input, &mut out);
    out
}

/// Invisible characters that change how the text around them reads:
/// bidirectional overrides and isolates, zero-width characters.
fn is_disguise(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// `s` without any control character but newline and tab (escape sequences
/// lose their ESC and show as harmless text), nor bidirectional or
/// zero-width characters.
pub fn strip_controls(s: &str) -> String {
    s.chars()
        .filter(|&c| c == '\n' || c == '\t' || !(c.is_control() || is_disguise(c)))
        .collect()
}

/// `s` with control characters escaped (for the terminal), quotes kept;
/// bidirectional and zero-width characters escaped too (`\u{202e}`).
pub fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else if is_disguise(c) {
                c.escape_unicode().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// `s` with control characters but newline and tab escaped (`\u{1b}`), for
/// messages that may quote bytes from a container.
pub fn printable_lines(s: &str) -> String {
    s.split('\n')
        .map(|line| {
            line.split('\t')
                .map(printable)
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
