//! Any bytes given to the loader and validator: an error is fine, a panic or hang is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_api::load::LoadResult;
use weft_api::validate::check_loaded;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut r = LoadResult::default();
        r.load_str("fuzz.yaml", text);
        for o in &r.objects {
            let _ = check_loaded(o, true);
            let _ = o.resource.to_json();
        }
    }
});
