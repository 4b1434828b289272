//! A storage descriptor of ABI version 1, whose requests had no tenant: the host must refuse
//! it, saying why, before calling anything.

use std::ffi::{c_char, c_void};

use kiln_plugin_api::abi::{self, ByteBuf, Descriptor};

unsafe extern "C" fn create(_: *const u8, _: usize, _: *mut *mut c_void, _: *mut ByteBuf) -> i32 {
    panic!("a refused plugin must never be called")
}
unsafe extern "C" fn destroy(_: *mut c_void) {}
unsafe extern "C" fn call(_: *mut c_void, _: *const u8, _: usize, _: *mut ByteBuf) -> i32 {
    panic!("a refused plugin must never be called")
}

static DESCRIPTOR: Descriptor = Descriptor {
    magic: abi::MAGIC,
    abi_version: 1,
    kind: abi::KIND_STORAGE,
    name: c"old-storage".as_ptr() as *const c_char,
    version: c"0.1.0".as_ptr() as *const c_char,
    create,
    destroy,
    call,
    free: abi::free_buf,
};

#[no_mangle]
pub extern "C" fn kiln_plugin_entry() -> *const Descriptor {
    &DESCRIPTOR
}
