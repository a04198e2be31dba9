// A part of the page drawn from the prompter's views (gr.HTML's js_on_load; props.part names it:
// "status", "candidates", "legend" or "exports"). The prompter dispatches "sam-demo:view" with the
// HTML of each part whenever it shows a view, so a click's answer updates them with the mask.
// A button with data-candidate asks the prompter to show that candidate ("sam-demo:candidate").
const part = props.part;
document.addEventListener('sam-demo:view', (event) => {
  const html = event.detail && event.detail[part];
  if (typeof html === 'string') element.innerHTML = html;
});
element.addEventListener('click', (event) => {
  const button = event.target.closest('[data-candidate]');
  if (button) document.dispatchEvent(new CustomEvent('sam-demo:candidate', {detail: {index: Number(button.dataset.candidate)}}));
});
