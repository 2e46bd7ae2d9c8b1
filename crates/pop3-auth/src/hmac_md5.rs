//! HMAC-MD5 that can start from Dovecot's stored `{CRAM-MD5}` value.
//!
//! Dovecot's CRAM-MD5 scheme does not store the password but the two MD5 states HMAC-MD5 reaches
//! after hashing the key XOR ipad and XOR opad blocks (RFC 2104). Resuming MD5 from such a state
//! needs the MD5 compression function, which the md-5 crate does not expose, so it is written
//! here (RFC 1321, section 3.4) and checked against md-5 in the tests.

use md5::{Digest, Md5};

/// The inner and outer HMAC-MD5 states for one key.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct CramContext {
    inner: [u32; 4],
    outer: [u32; 4],
}

impl std::fmt::Debug for CramContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CramContext(<redacted>)")
    }
}

const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

impl CramContext {
    /// The states for a password used as the HMAC key.
    pub(crate) fn from_password(password: &[u8]) -> Self {
        let mut key = [0u8; 64];
        if password.len() > 64 {
            key[..16].copy_from_slice(&Md5::digest(password));
        } else {
            key[..password.len()].copy_from_slice(password);
        }
        let pad = |byte: u8| {
            let mut block = [0u8; 64];
            for (b, k) in block.iter_mut().zip(key) {
                *b = k ^ byte;
            }
            let mut state = INIT;
            compress(&mut state, &block);
            state
        };
        Self {
            inner: pad(0x36),
            outer: pad(0x5c),
        }
    }

    /// Parses Dovecot's encoding: 64 hex digits, the outer then the inner state, each word
    /// little-endian.
    #[cfg(feature = "server")]
    pub(crate) fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        let mut words = [0u32; 8];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(4)) {
            *w = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Some(Self {
            outer: [words[0], words[1], words[2], words[3]],
            inner: [words[4], words[5], words[6], words[7]],
        })
    }

    /// Dovecot's encoding (see [`from_hex`](Self::from_hex)).
    #[cfg(feature = "server")]
    pub(crate) fn to_hex(&self) -> String {
        let bytes: Vec<u8> = self
            .outer
            .iter()
            .chain(&self.inner)
            .flat_map(|w| w.to_le_bytes())
            .collect();
        hex::encode(bytes)
    }

    /// HMAC-MD5 of `message` under the key these states came from.
    pub(crate) fn mac(&self, message: &[u8]) -> [u8; 16] {
        let inner = finish(self.inner, 64, message);
        finish(self.outer, 64, &inner)
    }
}

/// Completes an MD5 computation whose first `done` octets (a multiple of 64) produced `state`.
fn finish(mut state: [u32; 4], done: u64, data: &[u8]) -> [u8; 16] {
    let mut blocks = data.chunks_exact(64);
    for block in blocks.by_ref() {
        compress(&mut state, block.try_into().unwrap_or(&[0; 64]));
    }
    let rest = blocks.remainder();
    let bits = (done + data.len() as u64).wrapping_mul(8);
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let len = if rest.len() < 56 { 64 } else { 128 };
    tail[len - 8..len].copy_from_slice(&bits.to_le_bytes());
    for block in tail[..len].chunks_exact(64) {
        compress(&mut state, block.try_into().unwrap_or(&[0; 64]));
    }
    let mut out = [0u8; 16];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

const SHIFTS: [u32; 64] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9,
    14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15,
    21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
];

/// floor(abs(sin(i + 1)) * 2^32), RFC 1321 section 3.4.
const K: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];

fn compress(state: &mut [u32; 4], block: &[u8; 64]) {
    let mut m = [0u32; 16];
    for (w, chunk) in m.iter_mut().zip(block.chunks_exact(4)) {
        *w = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    let [mut a, mut b, mut c, mut d] = *state;
    for i in 0..64 {
        let (f, g) = match i / 16 {
            0 => ((b & c) | (!b & d), i),
            1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
            2 => (b ^ c ^ d, (3 * i + 5) % 16),
            _ => (c ^ (b | !d), (7 * i) % 16),
        };
        let rotated = a
            .wrapping_add(f)
            .wrapping_add(K[i])
            .wrapping_add(m[g])
            .rotate_left(SHIFTS[i]);
        a = d;
        d = c;
        c = b;
        b = b.wrapping_add(rotated);
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d]) {
        *s = s.wrapping_add(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};

    #[test]
    fn md5_matches_the_md5_crate() {
        let mut x: u32 = 1;
        for len in [0usize, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 1000] {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    x.to_be_bytes()[1]
                })
                .collect();
            assert_eq!(
                finish(INIT, 0, &data),
                <[u8; 16]>::from(Md5::digest(&data)),
                "len {len}"
            );
        }
    }

    #[test]
    fn hmac_matches_the_hmac_crate() {
        for key in [&b"k"[..], &[7u8; 64], &[9u8; 100]] {
            for msg in [
                &b""[..],
                b"<1896.697170952@postoffice.reston.mci.net>",
                &[1u8; 200],
            ] {
                let mut h = Hmac::<Md5>::new_from_slice(key).unwrap();
                h.update(msg);
                let expected: [u8; 16] = h.finalize().into_bytes().into();
                assert_eq!(CramContext::from_password(key).mac(msg), expected);
            }
        }
    }

    #[cfg(feature = "server")]
    #[test]
    fn dovecot_encoding() {
        // `doveadm pw -s CRAM-MD5 -p secret` (Dovecot 2.3.19.1).
        let stored = "cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56";
        assert_eq!(CramContext::from_password(b"secret").to_hex(), stored);
        assert_eq!(
            CramContext::from_hex(stored),
            Some(CramContext::from_password(b"secret"))
        );
        assert_eq!(CramContext::from_hex("xyz"), None);
    }
}
