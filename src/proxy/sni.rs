//! Reading the server name (SNI) from the first bytes of a TLS connection:
//! the ClientHello, which may be split over several TLS records and reads.
//! Pure and bounded: it looks at most [`MAX_BUFFER`] bytes and refuses a
//! ClientHello over [`MAX_HELLO`] bytes. The bytes are hostile; nothing
//! here panics or allocates more than the name.

/// The largest ClientHello handshake message accepted (its body).
pub const MAX_HELLO: usize = 16 * 1024;

/// The most bytes the caller need buffer: a [`MAX_HELLO`] message plus the
/// record headers of a reasonable split. Past it, the answer is
/// [`Hello::Malformed`].
pub const MAX_BUFFER: usize = MAX_HELLO + 4 * 1024;

const RECORD_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;
/// The largest TLS record payload allowed (2^14 plus expansion).
const MAX_RECORD: usize = 16 * 1024 + 2048;

/// What the first bytes of a stream are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A TLS ClientHello may be starting: read more and ask again.
    NeedMore,
    /// A complete ClientHello naming this server (as sent: ASCII, not yet
    /// normalized).
    Sni(String),
    /// A complete ClientHello without a host name.
    NoSni,
    /// Not TLS at all.
    NotTls,
    /// TLS, but broken, oversized, or with an unusable name.
    Malformed,
}

/// Look at `buf`, the first bytes the client sent.
pub fn parse(buf: &[u8]) -> Hello {
    let buf = &buf[..buf.len().min(MAX_BUFFER)];
    let Some(&first) = buf.first() else {
        return Hello::NeedMore;
    };
    if first != RECORD_HANDSHAKE {
        return Hello::NotTls;
    }
    if buf.len() >= 2 && buf[1] != 3 {
        return Hello::NotTls;
    }
    // Gather the handshake bytes from the records, until the ClientHello
    // is complete.
    let mut handshake: Vec<u8> = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = buf.get(at..at + 5) else {
            return need_more(buf);
        };
        if header[0] != RECORD_HANDSHAKE || header[1] != 3 {
            return Hello::Malformed;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD {
            return Hello::Malformed;
        }
        let body_start = at + 5;
        let available = buf.len().saturating_sub(body_start).min(len);
        handshake.extend_from_slice(&buf[body_start..body_start + available]);
        if handshake.len() >= 4 {
            if handshake[0] != HANDSHAKE_CLIENT_HELLO {
                return Hello::Malformed;
            }
            let msg_len = u32::from_be_bytes([0, handshake[1], handshake[2], handshake[3]]);
            let msg_len = msg_len as usize;
            if msg_len > MAX_HELLO {
                return Hello::Malformed;
            }
            if handshake.len() >= 4 + msg_len {
                return client_hello(&handshake[4..4 + msg_len]);
            }
        }
        if available < len {
            return need_more(buf);
        }
        at = body_start + len;
    }
}

fn need_more(buf: &[u8]) -> Hello {
    if buf.len() >= MAX_BUFFER {
        Hello::Malformed
    } else {
        Hello::NeedMore
    }
}

/// A cursor over hostile bytes: every read is checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    /// A vector with a `width`-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// The ClientHello body (after the handshake header).
fn client_hello(body: &[u8]) -> Hello {
    match server_name(body) {
        Some(h) => h,
        None => Hello::Malformed,
    }
}

fn server_name(body: &[u8]) -> Option<Hello> {
    let mut r = Reader(body);
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    let session = r.vec8()?;
    if session.len() > 32 {
        return None;
    }
    let suites = r.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return None;
    }
    r.vec8()?; // compression methods
    if r.0.is_empty() {
        return Some(Hello::NoSni); // no extensions at all
    }
    let mut exts = Reader(r.vec16()?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        if kind != EXT_SERVER_NAME {
            continue;
        }
        let mut list = Reader(Reader(data).vec16()?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == NAME_TYPE_HOST {
                if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
                    return None;
                }
                return Some(Hello::Sni(String::from_utf8_lossy(name).into_owned()));
            }
        }
        return Some(Hello::NoSni);
    }
    Some(Hello::NoSni)
}

/// Test helpers: a ClientHello as a real client would send it.
#[cfg(test)]
pub(crate) mod fake {
    /// A ClientHello handshake message (header included) naming `sni`, or
    /// none, with a few other extensions around it as browsers send.
    pub fn client_hello(sni: Option<&str>) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7u8; 32]); // random
        body.push(32);
        body.extend([9u8; 32]); // session id
        body.extend([0, 6, 0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f]); // suites
        body.extend([1, 0]); // compression: null
        let mut exts = Vec::new();
        // supported_versions (43): TLS 1.3, 1.2
        exts.extend([0, 43, 0, 5, 4, 3, 4, 3, 3]);
        if let Some(name) = sni {
            let n = name.len() as u16;
            let mut ext = Vec::new();
            ext.extend((n + 3).to_be_bytes());
            ext.push(0);
            ext.extend(n.to_be_bytes());
            ext.extend(name.as_bytes());
            exts.extend([0, 0]);
            exts.extend((ext.len() as u16).to_be_bytes());
            exts.extend(ext);
        }
        // ALPN (16): h2
        exts.extend([0, 16, 0, 5, 0, 3, 2, b'h', b'2']);
        body.extend((exts.len() as u16).to_be_bytes());
        body.extend(exts);
        let mut msg = vec![1];
        msg.extend(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend(body);
        msg
    }

    /// `msg` in TLS handshake records of at most `chunk` bytes each.
    pub fn records(msg: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for part in msg.chunks(chunk) {
            out.extend([22, 3, 1]);
            out.extend((part.len() as u16).to_be_bytes());
            out.extend(part);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{client_hello, records};
    use super::*;

    #[test]
    fn the_name_is_read_from_one_record() {
        let bytes = records(&client_hello(Some("api.example.com")), 16384);
        assert_eq!(parse(&bytes), Hello::Sni("api.example.com".into()));
    }

    #[test]
    fn a_hello_split_over_records_and_reads_is_read_whole() {
        let bytes = records(&client_hello(Some("a.b.example.com")), 7);
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut]), Hello::NeedMore, "cut at {cut}");
        }
        assert_eq!(parse(&bytes), Hello::Sni("a.b.example.com".into()));
        // Bytes after the hello (early data) do not matter.
        let mut more = bytes.clone();
        more.extend([23, 3, 3, 0, 1, 0]);
        assert_eq!(parse(&more), Hello::Sni("a.b.example.com".into()));
    }

    #[test]
    fn a_hello_without_a_name_is_told_apart() {
        let bytes = records(&client_hello(None), 16384);
        assert_eq!(parse(&bytes), Hello::NoSni);
    }

    #[test]
    fn other_protocols_are_not_tls() {
        assert_eq!(parse(b"SSH-2.0-OpenSSH_9.6\r\n"), Hello::NotTls);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(parse(&[22, 2, 0]), Hello::NotTls);
        assert_eq!(parse(&[]), Hello::NeedMore);
    }

    #[test]
    fn broken_or_oversized_hellos_are_malformed() {
        let hello = client_hello(Some("example.com"));
        // Truncated inside: a message length larger than its content.
        let mut short = hello.clone();
        short.truncate(60);
        short[1..4].copy_from_slice(&[0, 0, 56]);
        assert_eq!(parse(&records(&short, 16384)), Hello::Malformed);
        // Not a ClientHello.
        let mut server = hello.clone();
        server[0] = 2;
        assert_eq!(parse(&records(&server, 16384)), Hello::Malformed);
        // A ClientHello announced over 16 KiB.
        let mut big = hello.clone();
        big[1..4].copy_from_slice(&[0, 0x40, 0x01]);
        assert_eq!(parse(&records(&big, 16384)), Hello::Malformed);
        // An alert record in the middle.
        let mut mixed = records(&hello[..10], 16384);
        mixed.extend([21, 3, 3, 0, 2, 2, 40]);
        assert_eq!(parse(&mixed), Hello::Malformed);
        // A name with control characters.
        let evil = records(&client_hello(Some("a\nb.com")), 16384);
        assert_eq!(parse(&evil), Hello::Malformed);
        // Endless one-byte records never complete: bounded.
        let mut long = vec![1u8, 0, 0x3e, 0x80];
        long.extend(vec![0u8; 16000]);
        let tiny = records(&long, 1);
        assert_eq!(parse(&tiny[..MAX_BUFFER - 1]), Hello::NeedMore);
        assert_eq!(parse(&tiny), Hello::Malformed);
    }

    #[test]
    fn random_bytes_never_panic() {
        // A cheap fuzz: every prefix and corruption of a real hello.
        let bytes = records(&client_hello(Some("x.example.com")), 50);
        for i in 0..bytes.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = parse(&b);
                let _ = parse(&b[..i]);
            }
        }
    }
}
