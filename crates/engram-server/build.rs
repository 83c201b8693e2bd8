//! Compiles the Swagger UI assets of `/docs` into the crate when
//! `ENGRAM_SWAGGER_UI_DIR` names a folder with them (see
//! `scripts/fetch-swagger-ui.sh`); without it `/docs` says how to get them.

use std::path::PathBuf;

const FILES: &[&str] = &[
    "swagger-ui-bundle.js",
    "swagger-ui.css",
    "favicon-32x32.png",
];

fn main() {
    println!("cargo:rerun-if-env-changed=ENGRAM_SWAGGER_UI_DIR");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let dir = std::env::var_os("ENGRAM_SWAGGER_UI_DIR").map(PathBuf::from);
    let mut entries = Vec::new();
    if let Some(dir) = dir {
        for f in FILES {
            let p = dir.join(f);
            println!("cargo:rerun-if-changed={}", p.display());
            if !p.is_file() {
                panic!(
                    "ENGRAM_SWAGGER_UI_DIR={} has no {f}: run scripts/fetch-swagger-ui.sh",
                    dir.display()
                );
            }
            entries.push(format!(
                "({f:?}, include_bytes!({:?}) as &[u8])",
                p.display().to_string()
            ));
        }
    }
    let code = format!(
        "/// The Swagger UI files compiled in (empty: none).\npub(crate) static ASSETS: &[(&str, &[u8])] = &[{}];\n",
        entries.join(", ")
    );
    std::fs::write(out.join("swagger_ui.rs"), code).expect("writing swagger_ui.rs");
}
