// SPDX-License-Identifier: MIT
/// @file
/// The one error-or-value type of the bpftime C++ API.
#pragma once

#include <cerrno>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

namespace bpftime {

/// An error: an errno-style code (positive, e.g. EINVAL) and a message for people.
struct error {
    int code = EINVAL;
    std::string message;
};

/// Makes an error value with a code and a message.
inline error make_error(int code, std::string message) {
    return error{code, std::move(message)};
}

/// Either a value of type T or an error. Exceptions are only for bugs; every expected
/// failure (bad input, a fault at run time) travels as a result.
template <class T>
class [[nodiscard]] result {
public:
    result(T value) : v_(std::move(value)) {}
    result(error err) : v_(std::move(err)) {}

    bool ok() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return ok(); }

    T &value() & { return std::get<0>(v_); }
    const T &value() const & { return std::get<0>(v_); }
    T &&value() && { return std::get<0>(std::move(v_)); }
    T &operator*() & { return value(); }
    const T &operator*() const & { return value(); }
    T *operator->() { return &value(); }
    const T *operator->() const { return &value(); }

    const error &err() const & { return std::get<1>(v_); }
    error &&err() && { return std::get<1>(std::move(v_)); }

private:
    std::variant<T, error> v_;
};

/// A result with no value: success, or an error.
template <>
class [[nodiscard]] result<void> {
public:
    result() = default;
    result(error err) : err_(std::move(err)), failed_(true) {}

    bool ok() const noexcept { return !failed_; }
    explicit operator bool() const noexcept { return ok(); }
    const error &err() const & { return err_; }
    error &&err() && { return std::move(err_); }

private:
    error err_;
    bool failed_ = false;
};

} // namespace bpftime
