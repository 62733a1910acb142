//! Fuzzes `ServiceImage::decode` (a service's laid-out code and data in the image, which the
//! kernel copies for the root and init for the others): arbitrary bytes are refused with a typed
//! error or decode to pages that are ordered, page-sized at most, below the stack and inside an
//! address space, with the entry point in an executable page, never a panic.
#![no_main]

use capvisor_image::service::{
    ACCESS_EXECUTE, MAX_PAGES, PAGE, SERVICE_MAGIC, SERVICE_VERSION, STACK_TOP, ServiceImage,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ServiceImage::decode(data);
    // The same bytes with the magic and version right, so the fuzzer spends its time on the
    // segments behind them.
    let mut bytes = data.to_vec();
    if bytes.len() < 12 {
        return;
    }
    bytes[..8].copy_from_slice(&SERVICE_MAGIC);
    bytes[8..12].copy_from_slice(&SERVICE_VERSION.to_le_bytes());
    let Ok(image) = ServiceImage::decode(&bytes) else {
        return;
    };
    let limit = STACK_TOP - image.header.stack_size;
    let (mut last, mut count, mut entry) = (0, 0, false);
    for page in image.pages() {
        assert!(page.ipa % PAGE == 0 && page.ipa >= last && page.ipa + PAGE <= limit);
        assert!(page.data.len() <= PAGE as usize);
        let inside = page.ipa <= image.header.entry && image.header.entry < page.ipa + PAGE;
        entry |= inside && page.access & ACCESS_EXECUTE != 0;
        last = page.ipa + PAGE;
        count += 1;
    }
    assert!(entry, "the entry point is in an executable page");
    assert_eq!(count, image.page_count());
    assert!(count <= MAX_PAGES);
});
