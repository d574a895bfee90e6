//! Generates the protobuf messages and ttRPC glue for `proto/ferry.proto` into
//! `OUT_DIR` with ttrpc-codegen (pure Rust, no protoc). The generated files
//! start with inner attributes, which `include!` cannot take, so they are
//! stripped here and the allowances are put on the modules in `lib.rs`.
use std::{fs, path::Path};

use ttrpc_codegen::{Codegen, Customize, ProtobufCustomize};

fn main() {
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let out = Path::new(&out);
    println!("cargo:rerun-if-changed=proto/ferry.proto");
    Codegen::new()
        .out_dir(out)
        .inputs(["proto/ferry.proto"])
        .include("proto")
        .rust_protobuf()
        .customize(Customize {
            async_all: true,
            ..Default::default()
        })
        .rust_protobuf_customize(ProtobufCustomize::default().gen_mod_rs(false))
        .run()
        .expect("ttrpc-codegen failed on proto/ferry.proto");
    for name in ["ferry.rs", "ferry_ttrpc.rs"] {
        let path = out.join(name);
        let text = fs::read_to_string(&path).expect("generated file exists");
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("#![") && !l.trim_start().starts_with("//!"))
            .collect();
        fs::write(&path, kept.join("\n")).expect("rewrite generated file");
    }
}
