use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "x-muscle-signature";

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length")
}

/// `sha256=<hex HMAC-SHA256 of body>`, the value of X-Muscle-Signature.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `signature` (a header value) is `sign(secret, body)`, compared in constant time.
pub fn verify(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(digest) = signature
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let mut mac = mac(secret);
    mac.update(body);
    mac.verify_slice(&digest).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_published_hmac_sha256_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn verify_refuses_another_body_secret_or_format() {
        let signature = sign(b"secret", b"{\"id\":1}");
        assert!(verify(b"secret", b"{\"id\":1}", &signature));
        assert!(!verify(b"secret", b"{\"id\":2}", &signature));
        assert!(!verify(b"other", b"{\"id\":1}", &signature));
        assert!(!verify(
            b"secret",
            b"{\"id\":1}",
            signature.trim_start_matches("sha256=")
        ));
        assert!(!verify(b"secret", b"{\"id\":1}", "sha256=zz"));
    }
}
