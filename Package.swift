// swift-tools-version:6.0
//
// Switchyard: a TCP (layer-4) load balancer in Swift over libuv.
//
// Three layers, one module each:
//   SwitchyardCore  - pure: INI parsing, typed config, schedulers, health state machines.
//                     No libuv, no clock, no randomness of its own (both are passed in).
//   SwitchyardUV    - libuv: loop, TCP streams, timers, signals, buffer pool. Knows nothing of balancing.
//   SwitchyardProxy - the wiring: listeners, proxy sessions, services, the process runtime.
//   switchyard      - the thin executable (command line).
import PackageDescription

/// Release builds skip the run-time exclusivity checks (`swift_beginAccess` on every class
/// property access was ~12% of the instructions per relayed connection). Debug builds, which the
/// test suite runs, keep them, so an exclusivity violation still fails the tests.
let releaseSpeed: [SwiftSetting] = [
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "Switchyard",
    products: [
        .executable(name: "switchyard", targets: ["switchyard"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibUV",
            path: "CLibUV",
            pkgConfig: "libuv",
            providers: [.apt(["libuv1-dev"])]
        ),
        .target(name: "SwitchyardCore", swiftSettings: releaseSpeed),
        .target(name: "SwitchyardUV", dependencies: ["CLibUV"], swiftSettings: releaseSpeed),
        .target(
            name: "SwitchyardProxy",
            dependencies: [
                "SwitchyardCore",
                "SwitchyardUV",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: releaseSpeed
        ),
        .executableTarget(
            name: "switchyard",
            dependencies: [
                "SwitchyardProxy",
                "SwitchyardCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(name: "switchyard-bench", dependencies: ["SwitchyardCore"]),
        .testTarget(name: "SwitchyardCoreTests", dependencies: ["SwitchyardCore"]),
        .testTarget(name: "SwitchyardUVTests", dependencies: ["SwitchyardUV"]),
        .testTarget(
            name: "SwitchyardEndToEndTests",
            // Depends on the executable so that `swift test` builds it; the tests run the binary.
            dependencies: ["switchyard"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
