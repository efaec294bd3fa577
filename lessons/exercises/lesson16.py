"""Lesson 16's exercises: where a GPU program waits, and which random draws may live on the device."""
from exercises import Exercise, choice

EXERCISES = {
    "16.1": Exercise(
        task="the letters of the lines that make the host wait for the GPU",
        verify=lambda answer: choice(answer, "acef", "lines that wait"),
        hint="anything that needs a device value on the host waits: .item(), float(), printing, and a "
             "Python `if` on a device value; a matrix product only queues a kernel; host_choice "
             "never touches the device"),
    "16.2": Exercise(
        task="the letters of the draws that may come from the device generator",
        verify=lambda answer: choice(answer, "a", "device-side draws"),
        hint="a draw may stay on the device if the host never needs its value: the host must know the "
             "expert before it launches the kernels, and the batch order before it builds the batch"),
}
