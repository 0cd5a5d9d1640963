//! A dynamic-module HTTP filter that does nothing: Envoy 1.40 (ABI v0.2.0) requires these
//! hooks; each returns at once (headers, body and trailers continue).

use std::ffi::c_void;

/// Something non-null for Envoy to hold as the configuration and each stream.
static HANDLE: u8 = 0;

fn handle() -> *const c_void {
    std::ptr::addr_of!(HANDLE).cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const u8 {
    b"v0.2.0\0".as_ptr()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(_e: *mut c_void, _n: *const u8, _nl: usize, _c: *const u8, _cl: usize) -> *const c_void {
    handle()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(_c: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(_e: *mut c_void, _c: *const c_void, _ev: u64) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _e: *mut c_void,
    _c: *const c_void,
    _id: u64,
    _r: u32,
    _h: *const c_void,
    _hs: usize,
    _b: *const c_void,
    _bs: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(_c: *const c_void, _e: *mut c_void) -> *const c_void {
    handle()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(_e: *mut c_void, _m: *const c_void, _eos: bool) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(_e: *mut c_void, _m: *const c_void, _eos: bool) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(_e: *mut c_void, _m: *const c_void) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(_e: *mut c_void, _m: *const c_void, _eos: bool) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(_e: *mut c_void, _m: *const c_void, _eos: bool) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(_e: *mut c_void, _m: *const c_void) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(_e: *mut c_void, _m: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(_m: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _e: *mut c_void,
    _m: *const c_void,
    _id: u64,
    _r: u32,
    _h: *const c_void,
    _hs: usize,
    _b: *const c_void,
    _bs: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(_e: *mut c_void, _m: *const c_void, _ev: u64) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(_e: *mut c_void, _m: *const c_void, _s: u64, _h: *const c_void, _hs: usize, _eos: bool) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(_e: *mut c_void, _m: *const c_void, _s: u64, _d: *const c_void, _ds: usize, _eos: bool) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(_e: *mut c_void, _m: *const c_void, _s: u64, _t: *const c_void, _ts: usize) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(_e: *mut c_void, _m: *const c_void, _s: u64) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(_e: *mut c_void, _m: *const c_void, _s: u64, _r: u32) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(_e: *mut c_void, _m: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(_e: *mut c_void, _m: *const c_void) {}
