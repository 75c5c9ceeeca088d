//! Whether the text stages may run their 64-bytes-at-a-time paths: AVX-512 F/BW with VBMI
//! (byte lookups) and VBMI2 (byte compress), as Zen 4/5 and Ice Lake or later have.
//! `SEQPIPE_NO_AVX512` turns them off (as it does for the matrix products).

/// Checked once per process.
pub fn available() -> bool {
    static YES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *YES.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::env::var_os("SEQPIPE_NO_AVX512").is_none()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vbmi")
                && is_x86_feature_detected!("avx512vbmi2")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}
