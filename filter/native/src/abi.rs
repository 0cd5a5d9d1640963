//! The part of Envoy's dynamic-modules ABI (`source/extensions/dynamic_modules/abi/abi.h`,
//! version v0.2.0 as in Envoy 1.40) that this module uses, declared by hand: the official
//! Rust SDK is not a published crate, and bindgen at build time would need Envoy's sources.
//!
//! There is no hash gate in this ABI: a signature that does not match the C declaration is
//! silent undefined behaviour. Each declaration below was checked against the Envoy 1.40.0
//! binary (arguments read by its implementation); pin the Envoy minor version the `.so` is
//! deployed with.

#![allow(non_camel_case_types, dead_code)]

use std::ffi::c_void;
use std::marker::PhantomData;

/// The version string `on_program_init` returns.
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";

pub type ConfigEnvoyPtr = *mut c_void;
pub type FilterEnvoyPtr = *mut c_void;
pub type SchedulerPtr = *mut c_void;
pub type ConfigSchedulerPtr = *mut c_void;

/// Bytes Envoy owns (valid as each hook or callback says).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

/// Bytes this module owns, read by Envoy during the call. The lifetime ties it to the
/// bytes it points at, so a buffer of a dropped temporary does not compile.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer<'a> {
    pub ptr: *const u8,
    pub length: usize,
    _bytes: PhantomData<&'a [u8]>,
}

impl<'a> ModuleBuffer<'a> {
    pub fn of(bytes: &'a [u8]) -> Self {
        Self { ptr: bytes.as_ptr(), length: bytes.len(), _bytes: PhantomData }
    }
    pub const NULL: ModuleBuffer<'static> = ModuleBuffer { ptr: std::ptr::null(), length: 0, _bytes: PhantomData };
}

/// A header this module owns (local replies, callouts).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleHeader<'a> {
    pub key: ModuleBuffer<'a>,
    pub value: ModuleBuffer<'a>,
}

/// A header in one of Envoy's header maps.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyHeader {
    pub key_ptr: *const u8,
    pub key_length: usize,
    pub value_ptr: *const u8,
    pub value_length: usize,
}

impl EnvoyHeader {
    pub const EMPTY: EnvoyHeader =
        EnvoyHeader { key_ptr: std::ptr::null(), key_length: 0, value_ptr: std::ptr::null(), value_length: 0 };
}

/// `envoy_dynamic_module_type_http_header_type`.
pub type HeaderType = u32;
pub const REQUEST_HEADER: HeaderType = 0;
pub const RESPONSE_HEADER: HeaderType = 2;
pub const RESPONSE_TRAILER: HeaderType = 3;

/// `envoy_dynamic_module_type_http_body_type`.
pub type BodyType = u32;
pub const RECEIVED_REQUEST_BODY: BodyType = 0;
pub const BUFFERED_REQUEST_BODY: BodyType = 1;

/// `envoy_dynamic_module_type_log_level`.
pub type LogLevel = u32;

/// Return values of the header hooks (`..._headers_status`).
pub const HEADERS_CONTINUE: u32 = 0;
pub const HEADERS_STOP_ITERATION: u32 = 1;
/// Return values of the body hooks (`..._body_status`).
pub const BODY_CONTINUE: u32 = 0;
pub const BODY_STOP_AND_BUFFER: u32 = 1;
/// Return value of the trailer hooks.
pub const TRAILERS_CONTINUE: u32 = 0;

/// `envoy_dynamic_module_type_http_callout_init_result_Success`.
pub const CALLOUT_INIT_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_http_callout_result_Success`.
pub const CALLOUT_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_metrics_result_Success`.
pub const METRICS_SUCCESS: u32 = 0;

extern "C" {
    /// Logs under Envoy's `dynamic_modules` logger.
    pub fn envoy_dynamic_module_callback_log(level: LogLevel, message: ModuleBuffer<'_>);
    /// Whether a level is enabled for that logger (cheap).
    pub fn envoy_dynamic_module_callback_log_enabled(level: LogLevel) -> bool;

    /// Defines a counter while the configuration is created; writes an opaque id.
    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer<'_>,
        label_names: *const ModuleBuffer<'_>,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    /// Defines a gauge, likewise.
    pub fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer<'_>,
        label_names: *const ModuleBuffer<'_>,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    /// Defines a histogram, likewise.
    pub fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer<'_>,
        label_names: *const ModuleBuffer<'_>,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    /// Adds to a counter through the configuration (any thread, no stream needed).
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer<'_>,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    /// Sets a gauge through the configuration.
    pub fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer<'_>,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    /// Records a histogram value through the configuration.
    pub fn envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer<'_>,
        label_values_length: usize,
        value: u64,
    ) -> u32;

    /// Number of headers in a map (0 when unavailable).
    pub fn envoy_dynamic_module_callback_http_get_headers_size(filter: FilterEnvoyPtr, map: HeaderType) -> usize;
    /// Fills a module-sized array with pointers into Envoy's header map (no copy).
    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterEnvoyPtr,
        map: HeaderType,
        out: *mut EnvoyHeader,
    ) -> bool;
    /// Value number `index` of a header (Envoy-owned until the hook ends or a setter runs).
    pub fn envoy_dynamic_module_callback_http_get_header(
        filter: FilterEnvoyPtr,
        map: HeaderType,
        key: ModuleBuffer<'_>,
        out: *mut EnvoyBuffer,
        index: usize,
        count: *mut usize,
    ) -> bool;
    /// Replaces every value of a header; a null value removes it.
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoyPtr,
        map: HeaderType,
        key: ModuleBuffer<'_>,
        value: ModuleBuffer<'_>,
    ) -> bool;
    /// Appends a header value.
    pub fn envoy_dynamic_module_callback_http_add_header(
        filter: FilterEnvoyPtr,
        map: HeaderType,
        key: ModuleBuffer<'_>,
        value: ModuleBuffer<'_>,
    ) -> bool;
    /// Makes Envoy match the route again (after the routing header changed).
    pub fn envoy_dynamic_module_callback_http_clear_route_cache(filter: FilterEnvoyPtr);
    /// Makes Envoy pick the matched route's cluster again (`refreshRouteCluster`), no re-match.
    pub fn envoy_dynamic_module_callback_http_clear_route_cluster_cache(filter: FilterEnvoyPtr);
    /// Answers the stream locally with these headers and body.
    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterEnvoyPtr,
        status: u32,
        headers: *const ModuleHeader<'_>,
        headers_length: usize,
        body: ModuleBuffer<'_>,
        details: ModuleBuffer<'_>,
    );

    /// Bytes of a body (received chunk or everything buffered).
    pub fn envoy_dynamic_module_callback_http_get_body_size(filter: FilterEnvoyPtr, body: BodyType) -> usize;
    /// Number of slices of a body.
    pub fn envoy_dynamic_module_callback_http_get_body_chunks_size(filter: FilterEnvoyPtr, body: BodyType) -> usize;
    /// Fills a module-sized array with Envoy-owned slices of a body.
    pub fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter: FilterEnvoyPtr,
        body: BodyType,
        out: *mut EnvoyBuffer,
    ) -> bool;
    /// Whether the received request body is the one an earlier filter buffered.
    pub fn envoy_dynamic_module_callback_http_received_buffered_request_body(filter: FilterEnvoyPtr) -> bool;

    /// Stores bytes as filter state under `key` (for access logs).
    pub fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: FilterEnvoyPtr,
        key: ModuleBuffer<'_>,
        value: ModuleBuffer<'_>,
    ) -> bool;
    /// Resumes a request this filter stopped.
    pub fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: FilterEnvoyPtr);

    /// A one-shot HTTP call from a stream; the answer arrives in `on_http_filter_http_callout_done`.
    pub fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: FilterEnvoyPtr,
        id: *mut u64,
        cluster: ModuleBuffer<'_>,
        headers: *const ModuleHeader<'_>,
        headers_length: usize,
        body: ModuleBuffer<'_>,
        timeout_ms: u64,
    ) -> u32;
    /// A one-shot HTTP call from the configuration (main thread); the answer arrives in
    /// `on_http_filter_config_http_callout_done`.
    pub fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config: ConfigEnvoyPtr,
        id: *mut u64,
        cluster: ModuleBuffer<'_>,
        headers: *const ModuleHeader<'_>,
        headers_length: usize,
        body: ModuleBuffer<'_>,
        timeout_ms: u64,
    ) -> u32;

    /// A scheduler posting events to a stream's worker thread (`on_http_filter_scheduled`).
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_new(filter: FilterEnvoyPtr) -> SchedulerPtr;
    /// Posts an event to the stream's worker thread; callable from any thread.
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_commit(scheduler: SchedulerPtr, event: u64);
    /// Frees a stream scheduler.
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: SchedulerPtr);
    /// A scheduler posting events to the main thread (`on_http_filter_config_scheduled`).
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(config: ConfigEnvoyPtr) -> ConfigSchedulerPtr;
    /// Posts an event to the main thread; callable from any thread.
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(scheduler: ConfigSchedulerPtr, event: u64);
    /// Frees a configuration scheduler.
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: ConfigSchedulerPtr);
}
